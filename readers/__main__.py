"""`python -m readers`: the reader's command line."""

from readers.cli import main

if __name__ == "__main__":
    main(prog_name="python -m readers")
