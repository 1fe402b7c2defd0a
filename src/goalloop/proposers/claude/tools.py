"""The client tools Claude is given (the text editor, bash, finish) and their execution in the worktree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goalloop.check import output_excerpt, run_process
from goalloop.goal import format_duration
from goalloop.path_rules import PathRules
from goalloop.sandbox import Wrap

EDITOR_TOOL_NAME = "str_replace_based_edit_tool"
BASH_TOOL_NAME = "bash"
FINISH_TOOL_NAME = "finish"
EDITOR_TOOL = {"type": "text_editor_20250728", "name": EDITOR_TOOL_NAME}
BASH_TOOL = {"type": "bash_20250124", "name": BASH_TOOL_NAME}
FINISH_TOOL = {
    "name": FINISH_TOOL_NAME,
    "description": (
        "End this attempt. Call it once your change is complete (or when you decide to change nothing). "
        "goalloop then commits your change and runs the check itself."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "description": {
                "type": "string",
                "description": "One line: what you changed and why. It becomes the attempt's record.",
            },
            "lesson": {
                "type": "string",
                "description": "Optional, one sentence worth knowing in later attempts (shown in every later prompt).",
            },
        },
        "required": ["description"],
    },
}

VIEW_LIMIT_CHARS = 40_000
LISTING_LIMIT = 400
BASH_OUTPUT_LIMIT = 12_000


@dataclass(frozen=True)
class ToolOutcome:
    text: str
    is_error: bool = False


class ToolRefused(Exception):
    """A tool call that was not carried out; its message goes back to the model as an is_error result."""


class Workbench:
    """Runs the editor and bash tools inside one worktree, under the goal's path rules; bash commands inside
    the sandbox (`wrap`) when the goal has one."""

    def __init__(self, worktree: Path, rules: PathRules, env: dict[str, str] | None, bash_timeout: float,
                 log_dir: Path, wrap: Wrap | None = None) -> None:
        self.root = worktree.resolve()
        self.rules = rules
        self.bash_env = env
        self.bash_timeout = bash_timeout
        self.log_dir = log_dir
        self.wrap = wrap
        self.touched = False
        """Whether a file was written or a command run: an attempt that ends early may still hold a change."""
        self._commands_run = 0

    def run(self, name: str, tool_input: Any) -> ToolOutcome:
        try:
            if not isinstance(tool_input, dict):
                raise ToolRefused("the tool input must be an object")
            if name == EDITOR_TOOL_NAME:
                return self.edit(tool_input)
            if name == BASH_TOOL_NAME and self.bash_env is not None:
                return self.bash(tool_input)
            raise ToolRefused(f"there is no tool named {name!r} here")
        except ToolRefused as refusal:
            return ToolOutcome(str(refusal), is_error=True)
        except (OSError, ValueError) as error:
            return ToolOutcome(f"{name} failed: {error}", is_error=True)

    # -- the editor -------------------------------------------------------------------------------------
    def edit(self, args: dict[str, Any]) -> ToolOutcome:
        command, path = args.get("command"), args.get("path")
        if not isinstance(path, str) or not path.strip():
            raise ToolRefused("give a path, relative to the repository root")
        if command == "view":
            return self._view(path, args.get("view_range"))
        if command not in ("create", "str_replace", "insert"):
            raise ToolRefused(f"unknown command {command!r}; use view, create, str_replace or insert")
        target, rel = self._resolve(path, writing=True)
        if command == "create":
            outcome = self._create(target, rel, args.get("file_text"))
        elif command == "str_replace":
            outcome = self._str_replace(target, rel, args.get("old_str"), args.get("new_str", ""))
        else:
            outcome = self._insert(target, rel, args.get("insert_line"), args.get("insert_text", args.get("new_str")))
        self.touched = True
        return outcome

    def _resolve(self, path: str, *, writing: bool) -> tuple[Path, str]:
        """The real path and its repo-relative form, or a refusal saying why."""
        candidate = Path(path.strip())
        resolved = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        try:
            rel = resolved.relative_to(self.root).as_posix()
        except ValueError:
            raise ToolRefused(
                f"{path} is outside the repository (it resolves to {resolved}); "
                "use a path inside it, relative to the repository root"
            ) from None
        if rel != "." and self.rules.is_hidden(rel):
            raise ToolRefused(f"{path} is not available to you; work with the other files")
        if writing:
            if rel == "." or rel.split("/")[0] == ".git":
                raise ToolRefused(f"{path} is git's own data; change the repository's files instead")
            violations = self.rules.violations([rel])
            if violations:
                raise ToolRefused(
                    f"{path} may not be changed: {'; '.join(violations)}. "
                    "Change only the files the goal allows (see 'You may change' and 'Never change')"
                )
        return resolved, rel

    def _view(self, path: str, view_range: Any) -> ToolOutcome:
        target, rel = self._resolve(path, writing=False)
        if target.is_dir():
            return ToolOutcome(self._listing(target, rel))
        lines = _read_text(target, rel).splitlines()
        first, last = 1, len(lines)
        if view_range is not None:
            if not (isinstance(view_range, list) and len(view_range) == 2
                    and all(isinstance(n, int) for n in view_range)):
                raise ToolRefused("view_range is [first_line, last_line], 1-based; last_line -1 means the end")
            first, last = view_range[0], (len(lines) if view_range[1] == -1 else view_range[1])
            if not 1 <= first <= max(last, 1) or last > len(lines):
                raise ToolRefused(f"view_range {view_range} is outside {rel}, which has {len(lines)} lines")
        numbered = "\n".join(f"{n:6}\t{line}" for n, line in enumerate(lines[first - 1:last], start=first))
        if len(numbered) > VIEW_LIMIT_CHARS:
            numbered = numbered[:VIEW_LIMIT_CHARS] + "\n[... cut; view a smaller view_range ...]"
        return ToolOutcome(numbered or f"({rel} is empty)")

    def _listing(self, directory: Path, rel: str) -> str:
        entries: list[str] = []

        def visible(folder: Path) -> list[Path]:
            return sorted(
                child for child in folder.iterdir()
                if not child.name.startswith(".") and not self.rules.is_hidden(child.relative_to(self.root).as_posix())
            )

        for child in visible(directory):
            inner = [child, *(visible(child) if child.is_dir() and not child.is_symlink() else [])]
            entries += [entry.relative_to(directory).as_posix() + ("/" if entry.is_dir() else "") for entry in inner]
            if len(entries) >= LISTING_LIMIT:
                entries = entries[:LISTING_LIMIT] + ["[... more entries not shown ...]"]
                break
        return f"Files in {rel} (two levels deep, hidden ones left out):\n" + "\n".join(entries)

    def _create(self, target: Path, rel: str, file_text: Any) -> ToolOutcome:
        if not isinstance(file_text, str):
            raise ToolRefused("create needs file_text, the whole content of the file")
        if target.is_dir():
            raise ToolRefused(f"{rel} is a directory")
        existed = target.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file_text.encode("utf-8"))
        return ToolOutcome(f"{'overwrote' if existed else 'created'} {rel}")

    def _str_replace(self, target: Path, rel: str, old: Any, new: Any) -> ToolOutcome:
        if not isinstance(old, str) or not old:
            raise ToolRefused("str_replace needs old_str, the exact text to replace")
        if not isinstance(new, str):
            raise ToolRefused("new_str must be text (empty to delete old_str)")
        text = _read_text(target, rel)
        count = text.count(old)
        if count == 0:
            raise ToolRefused(
                f"old_str was not found in {rel}; view the file and copy the text exactly, whitespace included"
            )
        if count > 1:
            raise ToolRefused(f"old_str appears {count} times in {rel}; include more surrounding lines so it is unique")
        start_line = text[: text.index(old)].count("\n") + 1
        replaced_lines = old.count("\n") + 1
        target.write_bytes(text.replace(old, new, 1).encode("utf-8"))
        return ToolOutcome(f"edited {rel}: replaced {replaced_lines} line(s) from line {start_line}")

    def _insert(self, target: Path, rel: str, line: Any, new_text: Any) -> ToolOutcome:
        if not isinstance(new_text, str):
            raise ToolRefused("insert needs insert_text, the text to insert")
        lines = _read_text(target, rel).splitlines(keepends=True)
        if not isinstance(line, int) or not 0 <= line <= len(lines):
            raise ToolRefused(f"insert_line must be a line number from 0 (the top) to {len(lines)} (the end) of {rel}")
        if line and not lines[line - 1].endswith("\n"):
            lines[line - 1] += "\n"
        inserted = new_text if new_text.endswith("\n") else new_text + "\n"
        lines.insert(line, inserted)
        target.write_bytes("".join(lines).encode("utf-8"))
        return ToolOutcome(f"inserted {len(inserted.splitlines())} line(s) after line {line} of {rel}")

    # -- bash -------------------------------------------------------------------------------------------
    def bash(self, args: dict[str, Any]) -> ToolOutcome:
        if args.get("restart"):
            return ToolOutcome("restarted (every command runs in a fresh shell anyway)")
        command = args.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ToolRefused("give a command to run")
        assert self.bash_env is not None
        self._commands_run += 1
        self.touched = True
        stem = self.log_dir / "bash" / f"{self._commands_run:03d}"
        result = run_process(
            command, cwd=self.root, env=self.bash_env, timeout=self.bash_timeout,
            stdout_path=stem.with_suffix(".stdout.log"), stderr_path=stem.with_suffix(".stderr.log"), wrap=self.wrap,
        )
        output = output_excerpt(result.stdout_path, result.stderr_path, BASH_OUTPUT_LIMIT) or "(no output)"
        if result.timed_out:
            limit = format_duration(self.bash_timeout)
            return ToolOutcome(f"{output}\n[timed out after {limit}; the command and its children were killed]",
                               is_error=True)
        return ToolOutcome(f"{output}\n[exit code {result.exit_code}]")


def _read_text(target: Path, rel: str) -> str:
    if not target.is_file():
        raise ToolRefused(f"{rel} does not exist" if not target.exists() else f"{rel} is not a regular file")
    try:
        return target.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ToolRefused(f"{rel} is not UTF-8 text; inspect it with bash instead") from None


def environment_without_secrets(env: dict[str, str], secret_patterns: list[str]) -> dict[str, str]:
    """`env` minus every variable whose name contains one of `secret_patterns` (case-insensitive), with pagers off."""
    patterns = [p.upper() for p in secret_patterns if p]
    kept = {name: value for name, value in env.items() if not any(p in name.upper() for p in patterns)}
    kept.update(PAGER="cat", GIT_PAGER="cat", GIT_TERMINAL_PROMPT="0")
    return kept


def _tool_result(use: dict[str, Any], outcome: ToolOutcome) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": use["id"], "content": outcome.text}
    if outcome.is_error:
        result["is_error"] = True
    return result
