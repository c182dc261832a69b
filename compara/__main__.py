from compara.cli import main

main()
