"""Customers in: batches of customers inserted or updated by the tenant's external id."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import PoolDep, TenantDep
from api.schemas import CustomersUpsert, CustomersUpserted
from core.customers.records import upsert_batch

router = APIRouter(prefix="/v1/tenants/{tenant}/customers", tags=["customers"])


@router.post("", response_model=CustomersUpserted)
async def upsert_customers(tenant: TenantDep, body: CustomersUpsert, pool: PoolDep) -> CustomersUpserted:
    """Insert or update customers by `external_id`; invalid rows are reported by index and field
    (`customers[3].email: …`) and the valid rows are written all the same."""
    report = await upsert_batch(pool, tenant, body.customers, lambda i, error: f"customers[{i}].{error}")
    return CustomersUpserted(
        inserted=report.counts.inserted, updated=report.counts.updated, rejected=report.rejected, errors=report.errors
    )
