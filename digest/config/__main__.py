"""``python -m digest.config``: print the configuration reference, or with
``--update-readme`` write it into README.md between its markers."""

import sys
from pathlib import Path

from digest.config import reference_markdown, update_readme

if sys.argv[1:] == ["--update-readme"]:
    update_readme(Path("README.md"))
else:
    print(reference_markdown())
