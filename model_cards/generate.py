"""Write the model card of every released SwinV2 checkpoint of the original model zoo into model_cards/<name>.md.

The cards come from the same template and code as `swinv2-hf convert` (swinv2_hf/model_card.py and
swinv2_hf/templates/model_card.md), so converting a release gives the card committed here, with the conversion's own
verification line added. Parameters and FLOPs are counted on the meta device; accuracy is the zoo's.

    python model_cards/generate.py [--namespace swinv2-hf] [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swinv2_hf import RELEASES, CardFacts, Preprocessing, SwinV2Config, describe_preprocessing, render_model_card

CARDS = Path(__file__).resolve().parent
DEFAULT_NAMESPACE = "swinv2-hf"


def release_card(name: str, namespace: str) -> str:
    """The card of the release `name`, as `swinv2-hf convert --model-name <name>` writes it but for its conversion
    line."""
    config = SwinV2Config.from_preset(name)
    facts = CardFacts(
        repo_id=f"{namespace}/{name}",
        model_name=name,
        variant=RELEASES[name],
        preprocessing=describe_preprocessing(config, Preprocessing()),
    )
    return str(render_model_card(config, facts)) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="the Hub namespace the cards' snippets name")
    parser.add_argument("--check", action="store_true", help="fail when a committed card is not what would be written")
    args = parser.parse_args()
    stale = []
    for name in RELEASES:
        card, path = release_card(name, args.namespace), CARDS / f"{name}.md"
        if args.check:
            if not path.is_file() or path.read_text() != card:
                stale.append(path.name)
        else:
            path.write_text(card)
    if stale:
        print(f"Out of date (run python model_cards/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    print(f"{len(RELEASES)} cards {'checked' if args.check else 'written'} in {CARDS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
