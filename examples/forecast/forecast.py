"""Holt-Winters (additive) forecasting: a level, a trend and a 12-month season, each smoothed over time.

The three smoothing factors below decide how fast each part follows the data: near 1 it chases the noise,
near 0 it ignores new months. goals/example.yaml tunes them.
"""

ALPHA = 0.5
BETA = 0.5
GAMMA = 0.5

PERIOD = 12


def one_step_forecasts(series: list[float], alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA) -> list[float]:
    """The forecast of month t made at the end of month t-1, for every month after the first two years."""
    first, second = series[:PERIOD], series[PERIOD : 2 * PERIOD]
    level = sum(first) / PERIOD
    trend = (sum(second) - sum(first)) / PERIOD**2
    season = [value - level for value in first]
    forecasts = []
    for t in range(PERIOD, len(series)):
        forecasts.append(level + trend + season[t % PERIOD])
        value, last_level = series[t], level
        level = alpha * (value - season[t % PERIOD]) + (1 - alpha) * (level + trend)
        trend = beta * (level - last_level) + (1 - beta) * trend
        season[t % PERIOD] = gamma * (value - level) + (1 - gamma) * season[t % PERIOD]
    return forecasts[PERIOD:]
