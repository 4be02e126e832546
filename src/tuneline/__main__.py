from tuneline.cli import main

main()
