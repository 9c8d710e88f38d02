"""`python -m firmware_bridge`."""

from firmware_bridge.cli import main

if __name__ == "__main__":
    main()
