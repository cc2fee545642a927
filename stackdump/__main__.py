"""`python -m stackdump` entry point."""

from stackdump.cli import main

if __name__ == "__main__":
    main()
