"""``python -m adavit_deploy``: the ``adavit-deploy`` program, where the console script is not on PATH."""

from .cli import main

if __name__ == "__main__":  # importing it (pydoc, doctest collection) runs nothing
    main()
