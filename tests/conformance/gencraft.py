import sandbox.gencraft  # noqa: F401  (registers the provider before any server starts)
from jobs.spec import JobSpec
from tests.conformance import Recipe
from workers.providers.gencraft import Gencraft

RECIPE = Recipe(
    provider="gencraft",
    adapter=Gencraft,
    ok=JobSpec(prompt="a lighthouse at dusk", provider="gencraft", aspect="16:9"),
    ok_images=1,
    invalid=JobSpec(prompt="a lighthouse", provider="gencraft", options={"model": "no-such-model"}),
    several=JobSpec(prompt="three lighthouses", provider="gencraft", count=3),
    several_images=3,
)
