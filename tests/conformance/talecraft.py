import sandbox.talecraft  # noqa: F401  (registers the sandbox's talecraft)
from jobs.spec import JobSpec
from tests.conformance import Recipe
from workers.providers.base import Transient
from workers.providers.talecraft import Talecraft

RECIPE = Recipe(
    provider="talecraft",
    adapter=Talecraft,
    ok=JobSpec(prompt="a brave knight in an enchanted forest", provider="talecraft", aspect="16:9"),
    ok_images=1,
    # Passes check (options go as they are) but overrides aspect_ratio with one TaleCraft refuses.
    invalid=JobSpec(prompt="a brave knight", provider="talecraft", options={"aspect_ratio": "5:4"}),
    # The call waits for the picture; the sandbox draws at once, so 1 s is plenty, and short enough
    # for the suite's held-back answer (3 s) to be lost.
    account_options={"timeout": "1"},
    failing_outcome=Transient,
)
