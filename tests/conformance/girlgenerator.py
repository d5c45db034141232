import sandbox.girlgenerator  # noqa: F401  (registers the provider before any server starts)
from jobs.spec import JobSpec
from tests.conformance import Recipe
from workers.providers.girlgenerator import Girlgenerator

RECIPE = Recipe(
    provider="girlgenerator",
    adapter=Girlgenerator,
    ok=JobSpec(prompt="a cute anime girl with blue hair, detailed portrait", provider="girlgenerator", aspect="2:3"),
    ok_images=1,
    # Passes check (options go as they are) but overrides the aspect with one the API refuses.
    invalid=JobSpec(prompt="a cute anime girl", provider="girlgenerator", options={"aspect_ratio": "5:4"}),
    refuses_content=True,
)
