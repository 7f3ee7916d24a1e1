"""``python -m trainer_client`` runs the ``trainer`` CLI."""

from trainer_client.cli import main

main()
