"""The container's entry: ``python -m bids_app.run BIDS_DIR OUTPUT_DIR participant|group [options]``.

A thin wrapper around :func:`ctp_nipype.cli.bids_app.main`, the same program as the
``ctp-bids-app`` command (the image's ``ENTRYPOINT``); kept for platforms that call
a ``run.py`` the way the BIDS Apps examples do.
"""

from __future__ import annotations

import sys

from ctp_nipype.cli.bids_app import main

if __name__ == "__main__":
    sys.exit(main())
