from scripts_engine.cli import main

main()
