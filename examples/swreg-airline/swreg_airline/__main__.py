"""``python -m swreg_airline``: print the path of the packaged workflow file (SWREG_WORKFLOW)."""

from swreg_airline import WORKFLOW_FILE

print(WORKFLOW_FILE)
