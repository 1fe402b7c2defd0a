from goalloop.quick import main

main()
