"""The Batches page and GET /admin/batches over PostgreSQL (the statements in its dialect,
the cost joined from its partitioned request log): test_console_batches's tests on a site
whose store is a PostgreSQL schema of its own."""

from __future__ import annotations

from test_console_batches import (  # noqa: F401 (collected here, against this module's site)
    batches,
    test_a_tenants_operator_sees_only_its_tenants_batches,
    test_an_admin_sees_every_tenants_batches_as_the_api_lists_them,
    test_the_endpoint_refuses_what_it_cannot_answer_in_openais_shape,
    test_the_status_filter_lists_only_that_status,
)

STORE = "postgresql"
