"""README "## Cookbook", parsed: each `### ` recipe with its fenced blocks, for the tests
that run the recipes exactly as printed (tests/e2e/policy/test_cookbook.py, and
tests/e2e/identity/test_quotas_and_policies.py for the recipes that change Envoy around the
filter)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"

# Recipes that change Envoy around the filter: run from their whole config in envoy/, whose
# parts the README shows.
ENVOY_CONFIG_RECIPES = {
    "Per-client quotas": "client-quotas.yaml",
    "Global rate limits per client": "global-ratelimit.yaml",
    "Policies with Envoy RBAC": "rbac-policies.yaml",
}


@dataclass(frozen=True)
class Recipe:
    title: str
    text: str
    blocks: list[tuple[str, str]]  # (language, content) of each fenced block, in order

    def block(self, language: str) -> str:
        found = [content for lang, content in self.blocks if lang == language]
        assert len(found) == 1, f"recipe {self.title!r}: {len(found)} {language} blocks"
        return found[0]


def _cookbook() -> tuple[str, dict[str, Recipe]]:
    text = README.read_text()
    assert "\n## Cookbook\n" in text, "README has no '## Cookbook' section"
    section = text.split("\n## Cookbook\n", 1)[1].split("\n## ", 1)[0]
    intro, *parts = re.split(r"^### ", section, flags=re.M)
    recipes = {}
    for part in parts:
        title, body = part.split("\n", 1)
        blocks = re.findall(r"^```(\w*)\n(.*?)^```", body, flags=re.M | re.S)
        recipes[title.strip()] = Recipe(title.strip(), body, blocks)
    return intro, recipes


INTRO, RECIPES = _cookbook()
