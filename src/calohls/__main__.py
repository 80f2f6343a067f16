"""``python -m calohls``: the command line, for environments without the ``calohls`` script on the PATH."""

from calohls.cli import main

if __name__ == "__main__":
    main()
