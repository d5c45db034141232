import sandbox.cloudsway  # noqa: F401  (registers the provider before any server starts)
from jobs.spec import JobSpec
from tests.conformance import Recipe
from workers.providers.cloudsway import Cloudsway

RECIPE = Recipe(
    provider="cloudsway",
    adapter=Cloudsway,
    ok=JobSpec(prompt="a fruit basket with dragon fruit and mango", provider="cloudsway", aspect="16:9"),
    ok_images=1,
    # Within what check knows, refused by the deployment: options go out as they are.
    invalid=JobSpec(prompt="a fruit basket", provider="cloudsway", options={"step": 99}),
    base_url=lambda sandbox_url: f"{sandbox_url}/v2/ai",
    account_options={"endpoint": "lXynAhfbAiD"},
    # One task makes both pictures.
    several=JobSpec(prompt="two fruit baskets", provider="cloudsway", count=2),
    several_images=2,
    documents_server_errors=False,
)
