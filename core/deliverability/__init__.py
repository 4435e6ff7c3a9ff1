"""Deliverability: each tenant's DKIM keys per sending domain and the signer (`dkim`), and the DNS
records a sending domain needs, with a check that looks them up (`domains`), and the gate that
refuses a campaign's start while they are missing (`gate`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import lazy_exports

if TYPE_CHECKING:
    from core.deliverability.dkim import DkimKey, DkimKeys, DkimSigner, ensure_key, rotate, sending_domain
    from core.deliverability.domains import DomainRecords, RecordCheck, check_domain, required_records
    from core.deliverability.gate import start_refusal

_EXPORTS: dict[str, str] = {
    "DkimKey": "dkim",
    "DkimKeys": "dkim",
    "DkimSigner": "dkim",
    "ensure_key": "dkim",
    "rotate": "dkim",
    "sending_domain": "dkim",
    "DomainRecords": "domains",
    "RecordCheck": "domains",
    "check_domain": "domains",
    "required_records": "domains",
    "start_refusal": "gate",
}
__all__ = [
    "DkimKey",
    "DkimKeys",
    "DkimSigner",
    "DomainRecords",
    "RecordCheck",
    "check_domain",
    "ensure_key",
    "required_records",
    "rotate",
    "sending_domain",
    "start_refusal",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
