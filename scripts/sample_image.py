"""Write the demo's sample images: a two-platform index tagged v1 and an image tagged tool."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.images import LayerSpec, OCILayout

# Two shared 1 MiB base layers and a small top layer per platform: big enough to see bytes move.
LAYERS = [LayerSpec(1, 1024 * 1024), LayerSpec(2, 1024 * 1024), LayerSpec(3, 64 * 1024)]


def main() -> None:
    """Build the layout at argv[1] and print the index's digest."""
    layout = OCILayout(Path(sys.argv[1]))
    built = layout.multi_platform("v1", LAYERS, label="demo")
    layout.image("tool", [*LAYERS[:1], LayerSpec(9, 32 * 1024)], label="tool")
    print(built.digest)


if __name__ == "__main__":
    main()
