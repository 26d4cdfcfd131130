from jsocmirror.cli import main

main()
