"""``python -m kubectl_modelship`` / ``kubectl-modelship``."""

from kubectl_modelship.cli import main

if __name__ == "__main__":
    main()
