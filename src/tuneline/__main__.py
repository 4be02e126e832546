from tuneline.cli.app import main

main()
