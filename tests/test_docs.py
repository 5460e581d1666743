"""The documentation: docs/'s generated tables are what docs/generate.py writes from the code (the
keys, the methods and their knobs, the zoo), the README stays short and links every page, and every
relative link of the README and of docs/ names a file that exists. (tests/test_check.py runs every
command of their code blocks with --check.)"""
import os
import re
import subprocess
import sys

from runs import ROOT

TOPICS = ("getting-started", "experiments", "datasets", "models", "recipes", "methods", "departures", "speed",
          "clusters", "extending", "config")


def test_the_generated_tables_are_what_the_code_says():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "docs", "generate.py"), "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + "\n(fix: python3 docs/generate.py)"


def test_a_changed_declaration_makes_the_check_fail(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(ROOT, "docs"))
    import generate
    from helper import config
    page = open(os.path.join(ROOT, "docs", "config.md")).read()
    assert generate.render(page) == page
    monkeypatch.setattr(config, "KEYS", config.KEYS + [("new_key", 1, "a key nobody documented")])
    assert "| `new_key` | `1` | a key nobody documented |" in generate.render(page)


def test_the_readme_is_short_and_links_every_page():
    text = open(os.path.join(ROOT, "README.md")).read()
    assert len(text.split()) < 1500 and len(text.splitlines()) < 160
    for topic in TOPICS:
        assert f"(docs/{topic}.md)" in text, topic


def test_every_relative_link_names_a_file():
    pages = ["README.md"] + [os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md")]
    missing = []
    for page in pages:
        text = open(os.path.join(ROOT, page)).read()
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            if not os.path.exists(os.path.normpath(os.path.join(ROOT, os.path.dirname(page), target))):
                missing.append(f"{page}: {target}")
    assert not missing, missing
