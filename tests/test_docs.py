"""The method lives in the repository: every citation of docs/method.md names a section it has."""

from __future__ import annotations

import re
import subprocess

from clipguard.assets import REPO_ROOT

METHOD = REPO_ROOT / "docs" / "method.md"
CITATION = re.compile(r"docs/method\.md((?:[ ,]*§\d+(?:-\d+)?)+)")


def test_every_method_citation_names_an_existing_section():
    sections = {int(n) for n in re.findall(r"^## §(\d+) ", METHOD.read_text(encoding="utf-8"), flags=re.MULTILINE)}
    assert sections >= set(range(1, 11))
    files = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    cited = 0
    for name in files.split():
        path = REPO_ROOT / name
        if path.suffix not in {".py", ".md", ".yaml", ".yml"} or path == METHOD or not path.is_file():
            continue
        for match in CITATION.finditer(path.read_text(encoding="utf-8")):
            for ref in re.findall(r"§(\d+)(?:-(\d+))?", match.group(1)):
                low, high = int(ref[0]), int(ref[1] or ref[0])
                missing = set(range(low, high + 1)) - sections
                assert not missing, f"{name} cites docs/method.md §{sorted(missing)}, which it does not have"
                cited += 1
    assert cited >= 20  # the model, losses, slerp, faces and metrics code all cite it


def test_readme_layout_table_names_every_module():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") :]
    missing = [
        f"{package}/{path.name}"
        for package in ("clipguard", "workers", "pipeline", "training")
        for path in sorted((REPO_ROOT / package).glob("*.py"))
        if path.name != "__init__.py" and f"`{path.name}`" not in layout
    ]
    assert not missing, f"README's layout table does not name {missing}"
