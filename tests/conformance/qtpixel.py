import sandbox.qtpixel  # noqa: F401  (registers the sandbox's qtpixel)
from jobs.spec import JobSpec
from tests.conformance import Recipe
from workers.providers.qtpixel import Qtpixel

RECIPE = Recipe(
    provider="qtpixel",
    adapter=Qtpixel,
    ok=JobSpec(prompt="a pixel-art treasure chest", provider="qtpixel", background="transparent"),
    ok_images=1,
    # Passes check (options go as they are) but asks for a scale QT Pixel refuses.
    invalid=JobSpec(prompt="a pixel-art treasure chest", provider="qtpixel", options={"scale": -5}),
    several=JobSpec(prompt="a pixel-art knight", provider="qtpixel", sprite="walk"),
    several_images=4,
    refuses_content=True,
)
