"""``python -m crl`` runs the command line."""

from crl.cli import main

main()
