from goalloop.cli import main

main()
