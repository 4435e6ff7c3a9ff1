"""The Temporal client as every Pennant process builds it: pydantic payloads, tracing
interceptor, and the search attributes operators filter by."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter

TENANT_ID = SearchAttributeKey.for_keyword("TenantId")
CAMPAIGN_ID = SearchAttributeKey.for_keyword("CampaignId")
SEARCH_ATTRIBUTES = (TENANT_ID, CAMPAIGN_ID)


async def connect(address: str, namespace: str) -> Client:
    return await Client.connect(
        address,
        namespace=namespace,
        data_converter=pydantic_data_converter,
        interceptors=[TracingInterceptor()],
    )
