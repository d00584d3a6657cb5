"""Claims: results (`Claim`), claims as data (`ClaimSpec`, `ClaimList`) and the registry of every spec.

Each experiment's claims module (`experiments/<name>_claims.py`) builds one `ClaimList`; every spec
it adds is also registered in `CLAIM_SPECS` under "<experiment>:<id>".
"""

from icldyn.claims.base import (CLAIM_SPECS, Above, Below, Claim, ClaimList, ClaimSpec, Judged, Measurement,
                                above, below, default_views, unmeasured)

__all__ = ["CLAIM_SPECS", "Above", "Below", "Claim", "ClaimList", "ClaimSpec", "Judged", "Measurement", "above",
           "below", "default_views", "unmeasured"]
