from revtrace.cli import main

main()
