"""The pages' JavaScript: `tsc --checkJs` over player/static (TypeScript pinned in package.json,
installed by `make install` with `npm ci`) and node's test runner over the DOM-free modules
(player/tests/*.test.js: whip.js, channel.js, retry.js, quality.js, params.js)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TSC = ROOT / "node_modules" / ".bin" / "tsc"


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)


def test_pages_type_check_with_tsc() -> None:
    assert TSC.exists(), "TypeScript is not installed: run `make install` (npm ci)"
    result = run([str(TSC), "-p", "player/tsconfig.json"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dom_free_modules_pass_their_node_tests() -> None:
    node = shutil.which("node")
    assert node, "node is not installed: run `make install` (scripts/install-system.sh)"
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "player" / "tests").glob("*.test.js"))
    assert files, "no JavaScript tests found"
    result = run([node, "--test", "--test-reporter=tap", *files])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout, result.stdout
