"""The officer console (DESIGN.md §12), server-rendered; officers log in with their own card.

``GET /officer``                        without a console session: the card login (card.js in
                                        ``officer`` mode posts to ``/api/console/login``); with
                                        one: the approval queue (待審核), longest waiting first
``GET /officer/registrations/{id}``     a registration: masked data, the card's identity, its
                                        certificate explained like ``swreg cert inspect``, the
                                        audit trail with its diffs; 核准 and 駁回 (with a reason)
``POST …/approve``, ``POST …/reject``   → the registration again with 「已核准」 / 「已駁回」
``GET|POST /officer/accounts``          account search (帳號, 統一編號, OID, 身分證字號; a
                                        form post, so that no national ID is ever in a URL)
``GET /officer/accounts/{id}``          an account, its login certificates, its owner's customs
                                        certificates; 停用 / 恢復 with a reason (admins)
``POST …/suspend``, ``POST …/reactivate``
``GET /officer/trust``                  trust anchors, stored CRLs and their freshness
``GET /officer/audit``                  (admins) verify the chain, export it as JSON Lines
``POST /officer/audit/verify``, ``POST /officer/audit/export``
``POST /officer/logout``
``POST /api/console/login/challenge``   the console login's challenge (JSON, like 憑證登入's)
``POST /api/console/login``             the card's answer → the ``swreg_officer`` cookie

The console session is its own cookie (``__Host-swreg_officer`` over https, SameSite=Strict),
never an applicant's session; every form carries the CSRF token. Without a live session every
page goes back to ``/officer`` (the login). What an officer may do is the service's check
(:class:`~engine.services.officer_console.OfficerConsole`): a reviewer posting an admin's form
gets the error page, 403 ``not_authorized``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Request
from markupsafe import Markup, escape
from pydantic import BaseModel
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from engine._errors import RefusedError
from engine.core.declarations import Labels
from engine.services.customs import COLUMNS
from engine.services.officer_console import AccountHit, OfficerSessionView, RevocationFacts
from engine.services.officers import ADMIN, require_admin
from engine.web._api import CardIn, ChallengeOut
from engine.web._i18n import Translator
from engine.web._pages import form_values, render, taipei_time
from engine.web._portal import LOGIN_LIMIT, status_for
from engine.web._security import clear_officer_cookie, officer_cookie_name, set_officer_cookie
from engine.web._shared import PortalDep, actor, errors_by_field, limited, off_loop, portal_of
from engine.web._shared import translator as translator_of

router = APIRouter(include_in_schema=False)
api_router = APIRouter(prefix="/api/console", tags=["officer console"])

HOME: Final = "/officer"
AccountId = Annotated[int, Path(ge=1, le=2**31 - 1)]
"""An account's id in a console URL (a 32-bit key: anything else is no account)."""

_TEXTS: Final[dict[str, Labels]] = {
    "console": Labels("關員作業", "Officer console"),
    "login_intro": Labels(
        "請插入您的政府憑證（GCA）或自然人憑證（MOICA），輸入PIN碼後按下 [登入]。",
        "Insert your government (GCA) or citizen (MOICA) card, enter its PIN and press [Log in].",
    ),
    "login": Labels("登入", "Log in"),
    "logout": Labels("登出", "Log out"),
    "signed_in_as": Labels("登入者", "Signed in as"),
    "role_reviewer": Labels("審核人員", "Reviewer"),
    "role_admin": Labels("管理人員", "Administrator"),
    "nav": Labels("關員作業選單", "Console menu"),
    "queue": Labels("待審核案件", "Approval queue"),
    "queue_empty": Labels("目前沒有待審核的案件。", "No registration is waiting."),
    "registration": Labels("註冊案件", "Registration"),
    "registration_id": Labels("案件編號", "Registration"),
    "applicant_type": Labels("申請類別", "Applicant type"),
    "account": Labels("帳號", "Account"),
    "state": Labels("狀態", "Status"),
    "waiting_since": Labels("等待自", "Waiting since"),
    "open": Labels("檢視", "Open"),
    "entered": Labels("申請資料（已遮蔽）", "Entered data (masked)"),
    "card_identity": Labels("憑證身分", "What the card says"),
    "certificate": Labels("憑證說明", "The certificate"),
    "no_certificate": Labels("尚未檢查憑證。", "No card was checked yet."),
    "ca": Labels("憑證機構", "CA"),
    "subject": Labels("主體", "Subject"),
    "issuer": Labels("簽發者", "Issuer"),
    "serial": Labels("序號", "Serial"),
    "validity": Labels("有效期間", "Valid"),
    "key_usage": Labels("金鑰用途", "Key usage"),
    "cert_status": Labels("憑證狀態", "Status"),
    "revocation": Labels("廢止檢查", "Revocation"),
    "chain": Labels("憑證路徑", "Chain"),
    "accepted_by": Labels("可用於", "Accepted by"),
    "trail": Labels("稽核軌跡", "Audit trail"),
    "at": Labels("時間", "When"),
    "actor": Labels("執行者", "Actor"),
    "event": Labels("事件", "Event"),
    "change": Labels("狀態變更", "State change"),
    "diff": Labels("內容", "Details"),
    "decide": Labels("審核", "Decision"),
    "approve": Labels("核准", "Approve"),
    "reject": Labels("駁回", "Reject"),
    "reason": Labels("原因", "Reason"),
    "done_approved": Labels("已核准。", "Approved."),
    "done_rejected": Labels("已駁回。", "Rejected."),
    "done_suspended": Labels("帳號已停用。", "The account was suspended."),
    "done_reactivated": Labels("帳號已恢復。", "The account was reactivated."),
    "search": Labels("帳號查詢", "Account search"),
    "search_hint": Labels(
        "輸入帳號、統一編號、OID或身分證字號（以雜湊比對，不留存）。",
        "An account name, a UBN, an OID or a national ID (matched through its keyed hash, "
        "never kept).",
    ),
    "search_query": Labels("查詢條件", "Search for"),
    "search_button": Labels("查詢", "Search"),
    "no_hits": Labels("查無符合的帳號。", "No account matches."),
    "email": Labels("電子郵件Email", "E-mail"),
    "national_id": Labels("身分證字號", "National ID"),
    "ubn": Labels("統一編號", "UBN"),
    "oid": Labels("OID", "OID"),
    "created_at": Labels("建立時間", "Created"),
    "login_certificates": Labels("登入憑證", "Login certificates"),
    "card_role": Labels("卡別", "Card"),
    "not_after": Labels("有效期限", "Valid until"),
    "customs": Labels("通關憑證", "Customs certificates"),
    "no_customs": Labels("沒有通關憑證。", "No customs certificate."),
    "state_active": Labels("已啟用", "Active"),
    "state_suspended": Labels("已停用", "Suspended"),
    "state_locked": Labels("密碼已鎖定", "Password locked"),
    "state_pending_activation": Labels("待啟用", "Awaiting activation"),
    "cert_role_primary": Labels("主卡", "Primary card"),
    "cert_role_secondary": Labels("附卡", "Secondary card"),
    "cert_role_mobile": Labels("行動自然人憑證", "Mobile ID"),
    "cert_role_card": Labels("憑證卡", "Card"),
    "cert_status_active": Labels("有效", "Valid"),
    "cert_status_expired": Labels("已逾期", "Expired"),
    "cert_status_replaced": Labels("已更換", "Replaced"),
    "cert_status_revoked": Labels("已廢止", "Revoked"),
    "cert_status_valid": Labels("有效", "Valid"),
    "cert_status_not_yet_valid": Labels("尚未生效", "Not yet valid"),
    "cert_status_untrusted": Labels("不受信任", "Untrusted"),
    "cert_status_revocation_unknown": Labels("廢止狀態不明", "Revocation unknown"),
    "suspend": Labels("停用帳號", "Suspend the account"),
    "reactivate": Labels("恢復帳號", "Reactivate the account"),
    "trust": Labels("信任錨與廢止清冊", "Trust and revocation"),
    "anchors": Labels("信任錨", "Trust anchors"),
    "fingerprint": Labels("指紋", "Fingerprint"),
    "anchor": Labels("根憑證", "Anchor"),
    "intermediate": Labels("中繼憑證", "Intermediate"),
    "crls": Labels("廢止清冊（CRL）", "Revocation lists (CRLs)"),
    "no_crls": Labels("尚無廢止清冊。", "No CRL is stored."),
    "this_update": Labels("發布時間", "Issued"),
    "next_update": Labels("下次更新", "Next update"),
    "entries": Labels("筆數", "Entries"),
    "fresh": Labels("是否有效", "Fresh"),
    "yes": Labels("是", "Yes"),
    "no": Labels("否（過期）", "No (stale)"),
    "policy": Labels("廢止檢查政策", "Revocation policy"),
    "audit": Labels("稽核紀錄", "Audit log"),
    "audit_intro": Labels(
        "驗證稽核紀錄的雜湊鏈，或匯出為 JSONL 檔（每行一筆 JSON 紀錄，可用 {script} 獨立驗證）。",
        "Verify the audit log's hash chain, or export it as JSON Lines (checkable on its own "
        "with {script}).",
    ),
    "verify": Labels("驗證雜湊鏈", "Verify the chain"),
    "export": Labels("匯出", "Export"),
    "verified_ok": Labels(
        "雜湊鏈完整：共 {rows} 筆，最後雜湊 {last}。",
        "The chain holds: {rows} rows, last hash {last}.",
    ),
    "verified_bad": Labels(
        "雜湊鏈有誤：第 {seq} 筆（{reason}）。", "The chain is broken at row {seq} ({reason})."
    ),
    # a registration's certificate (``cert inspect``'s codes, worded)
    "validity_range": Labels("{start} 至 {end}", "{start} to {end}"),
    "ca_named": Labels("{code}（{kind}）", "{code} ({kind})"),
    "ca_MOICA": Labels("自然人憑證", "citizen certificate"),
    "ca_MOEACA": Labels("工商憑證", "business certificate"),
    "ca_XCA": Labels("組織團體憑證", "organisation certificate"),
    "ca_GCA": Labels("政府憑證", "government certificate"),
    "ca_TaiCA": Labels("通關專屬憑證", "customs-exclusive certificate"),
    "ca_unknown": Labels("不明的憑證機構", "Unknown CA"),
    "ku_digital_signature": Labels("數位簽章", "Digital signature"),
    "ku_content_commitment": Labels("不可否認", "Non-repudiation"),
    "ku_key_encipherment": Labels("金鑰加密", "Key encipherment"),
    "ku_data_encipherment": Labels("資料加密", "Data encipherment"),
    "ku_key_agreement": Labels("金鑰協議", "Key agreement"),
    "ku_key_cert_sign": Labels("簽發憑證", "Certificate signing"),
    "ku_crl_sign": Labels("簽發廢止清冊", "CRL signing"),
    "ku_encipher_only": Labels("僅限加密", "Encipher only"),
    "ku_decipher_only": Labels("僅限解密", "Decipher only"),
    "no_key_usage": Labels("未限定", "Not restricted"),
    "revocation_source_ocsp": Labels("線上憑證狀態查詢（OCSP）", "OCSP"),
    "revocation_source_crl": Labels("廢止清冊（CRL）", "CRL"),
    "revocation_source_none": Labels("無來源回應", "none answered"),
    "revocation_status_good": Labels("未廢止", "Not revoked"),
    "revocation_status_revoked": Labels("已廢止", "Revoked"),
    "revocation_status_unknown": Labels("無法確認", "Unknown"),
    "revocation_checked": Labels(
        "{status}，依據：{source}，查詢時間 {at}", "{status} (source: {source}; checked {at})"
    ),
    "revocation_unchecked": Labels("{status}，依據：{source}", "{status} (source: {source})"),
    "revocation_revoked": Labels(
        "廢止原因：{reason}，廢止時間 {at}", "Reason: {reason}; revoked {at}"
    ),
    "reason_unspecified": Labels("未說明", "Unspecified"),
    "reason_key_compromise": Labels("金鑰洩露", "Key compromise"),
    "reason_ca_compromise": Labels("憑證機構金鑰洩露", "CA compromise"),
    "reason_affiliation_changed": Labels("隸屬關係變更", "Affiliation changed"),
    "reason_superseded": Labels("已被取代", "Superseded"),
    "reason_cessation_of_operation": Labels("停止運作", "Cessation of operation"),
    "reason_certificate_hold": Labels("暫時停用", "Certificate hold"),
    "reason_privilege_withdrawn": Labels("權限撤銷", "Privilege withdrawn"),
    "reason_aa_compromise": Labels("屬性機構金鑰洩露", "Attribute authority compromise"),
    "reason_remove_from_crl": Labels("自廢止清冊移除", "Removed from the CRL"),
    "accepted_types": Labels("註冊申請類別", "Applicant types"),
    "accepted_usages": Labels("通關憑證使用類型", "Customs certificate usage types"),
    "accepted_none": Labels("無", "None"),
    # the audit trail: events, actors, what an officer looked at
    "event_start": Labels("開始申請", "Started"),
    "event_next": Labels("完成步驟", "Step completed"),
    "event_back": Labels("回上一步", "Went back"),
    "event_cancel": Labels("取消申請", "Cancelled"),
    "event_expire": Labels("逾時", "Expired"),
    "event_approve": Labels("核准", "Approved"),
    "event_reject": Labels("駁回", "Rejected"),
    "event_officer_viewed": Labels("關員檢視", "Viewed by an officer"),
    "actor_cli": Labels("命令列", "Command line"),
    "actor_system": Labels("系統", "System"),
    "actor_web": Labels("網站", "Web site"),
    "actor_api": Labels("API", "API"),
    "actor_officer": Labels("關員 {name}", "Officer {name}"),
    "actor_client": Labels("{channel}（用戶端 {key}）", "{channel} (client {key})"),
    "what_registration": Labels("註冊案件", "Registration"),
    "what_account": Labels("帳號", "Account"),
    # trust and audit
    "url": Labels("網址", "URL"),
    "policy_hard": Labels(
        "嚴格（無法確認廢止狀態時拒絕）", "Hard (an unknown revocation status is refused)"
    ),
    "policy_soft": Labels(
        "寬鬆（無法確認廢止狀態時仍接受並記錄）",
        "Soft (an unknown revocation status is accepted and recorded)",
    ),
    "audit_missing row": Labels("缺少紀錄", "a row is missing"),
    "audit_broken link": Labels("雜湊鏈結中斷", "the hash link is broken"),
    "audit_edited row": Labels("紀錄遭修改", "the row was edited"),
    "audit_unexpected row": Labels("非預期的紀錄", "an unexpected row"),
    "audit_row count mismatch": Labels("筆數不符", "the row count does not match"),
}


def _texts(t: Translator) -> dict[str, str]:
    return {key: t.label(labels) for key, labels in _TEXTS.items()}


_CJK: Final = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
"""Chinese characters and CJK (full-width) punctuation."""
_WORD: Final = re.compile(r"[A-Za-z]{3,}")
_RDN: Final = r"(?:C|O|OU|CN|L|ST|SN|DC|UID|serialNumber|emailAddress|givenName)"
_DN_RUN: Final = re.compile(rf"\b{_RDN}=(?:(?!, (?!{_RDN}=)).)*")
"""A distinguished name inside a text (``C=TW O=Finance … CN=…`` or ``CN=…,O=…,C=TW``): up to
a ", " that is not followed by another attribute, or the end."""
_CLIENT: Final = re.compile(r"(web|api):client=([0-9a-f]+)")
_NOTHING: Final = "—"


class Words:
    """How the console's pages word what the services return as codes (DESIGN.md §12, issue
    19: one language per page).

    Every code has its label in :data:`_TEXTS` (or the plugins' :class:`Labels`: applicant
    and usage types, workflow steps); a code nobody worded (a third party's) is shown as it
    is, marked ``lang="en"`` on a zh-TW page when it reads as English. Proper names (CA names,
    certificate subjects and issuers, e-mail addresses, URLs, hex) are shown as they are,
    marked ``translate="no"``; Chinese inside them, or in what an applicant or officer typed,
    is marked ``lang="zh-TW"`` on an English page.
    """

    def __init__(
        self,
        t: Translator,
        x: Mapping[str, str],
        *,
        types: Mapping[str, Labels],
        usages: Mapping[str, Labels],
        states: Mapping[str, Labels] | None = None,
    ) -> None:
        self._t = t
        self._x = x
        self._types = types
        self._usages = usages
        self._states = states or {}
        self.separator = t("list_separator")

    @property
    def _english(self) -> bool:
        return self._t.language == "en"

    # -- text, names, codes ----------------------------------------------------------------------

    def text(self, value: object) -> Markup | str:
        """Text as typed or stored (a name, a reason, a company): Chinese on an English page
        marked as such."""
        shown = str(value)
        if self._english and _CJK.search(shown):
            return Markup('<span lang="zh-TW">{}</span>').format(shown)
        return shown

    def name(self, value: object) -> Markup:
        """A proper name or an identifier, never translated."""
        shown = str(value)
        if self._english and _CJK.search(shown):
            return Markup('<span translate="no" lang="zh-TW">{}</span>').format(shown)
        return Markup('<span translate="no">{}</span>').format(shown)

    def names(self, text: str) -> Markup:
        """``text`` with the distinguished names in it shown as names."""
        parts: list[Markup | str] = []
        end = 0
        for match in _DN_RUN.finditer(text):
            parts += [self.text(text[end : match.start()]), self.name(match.group())]
            end = match.end()
        parts.append(self.text(text[end:]))
        return Markup("").join(parts)

    def code(self, code: str) -> Markup | str:
        """A code nobody worded, as it is (marked English on a zh-TW page when it reads so)."""
        if not self._english and _WORD.search(code):
            return Markup('<span lang="en">{}</span>').format(code)
        return self.text(code)

    def coded(self, prefix: str, code: str | None) -> Markup | str:
        """The label of ``prefix + code`` in the console's texts, else the code."""
        if code is None or code == "":
            return _NOTHING
        found = self._x.get(prefix + code)
        return found if found is not None else self.code(code)

    def _labelled(self, labels: Labels | None, code: str) -> Markup | str:
        return self._t.label(labels) if labels is not None else self.code(code)

    def join(self, items: Sequence[Markup | str]) -> Markup:
        return Markup(escape(self.separator)).join(items) if items else Markup(_NOTHING)

    # -- what the services return ----------------------------------------------------------------

    def type(self, code: str) -> Markup | str:
        """An applicant type (申請類別) by its label."""
        return self._labelled(self._types.get(code), code)

    def usage(self, code: str) -> Markup | str:
        """A customs certificate usage type (憑證使用類型) by its label."""
        return self._labelled(self._usages.get(code), code)

    def state(self, code: str | None) -> Markup | str:
        """A registration's state as its workflow words it (待審核 at an officer step)."""
        if not code:
            return ""
        return self._labelled(self._states.get(code), code)

    def event(self, code: str) -> Markup | str:
        return self.coded("event_", code)

    def ca(self, code: str) -> Markup | str:
        """A CA: its name (a proper name) with the kind of certificate it issues."""
        kind = self._x.get(f"ca_{code}")
        if code == "unknown" and kind is not None:
            return kind
        if kind is None:
            return self.name(code)
        return Markup(escape(self._x["ca_named"])).format(code=self.name(code), kind=kind)

    def rank(self, code: str | None) -> Markup | str:
        """A card rank (主卡, 附卡, 行動自然人憑證)."""
        return self.coded("cert_role_", code)

    def key_usages(self, codes: Sequence[str]) -> Markup:
        if not codes:
            return Markup(escape(self._x["no_key_usage"]))
        return self.join(
            [
                Markup('<span data-key-usage="{}">{}</span>').format(c, self.coded("ku_", c))
                for c in codes
            ]
        )

    def revocation(self, facts: RevocationFacts) -> Markup:
        """The revocation verdict: status, source and when it was checked (Taiwan time)."""
        status = self.coded("revocation_status_", facts.status)
        source = self.coded("revocation_source_", facts.source)
        if facts.checked_at is not None:
            at = self.time(facts.checked_at)
            shown = Markup(escape(self._x["revocation_checked"])).format(
                status=status, source=source, at=at
            )
        else:
            shown = Markup(escape(self._x["revocation_unchecked"])).format(
                status=status, source=source
            )
        if facts.reason is not None or facts.revoked_at is not None:
            revoked = Markup(escape(self._x["revocation_revoked"])).format(
                reason=self.coded("reason_", facts.reason),
                at=self.time(facts.revoked_at) if facts.revoked_at else _NOTHING,
            )
            shown = Markup("{}{}{}").format(shown, self._t("full_stop"), revoked)
        return shown

    def accepted(self, codes: Sequence[str]) -> list[tuple[str, str, Markup]]:
        """``accepted_by`` in two groups, each ``(group, title, labels)``: the applicant
        types a registration with the certificate may choose, and the usage types of 通關憑證
        that import it (a code neither knows goes with the types, as it is)."""
        usages = [c for c in codes if c in self._usages and c not in self._types]
        types = [c for c in codes if c not in usages]
        return [
            (
                group,
                self._x[title],
                self.join(
                    [Markup('<span data-code="{}">{}</span>').format(c, word(c)) for c in found]
                ),
            )
            for group, title, found, word in (
                ("applicant_types", "accepted_types", types, self.type),
                ("usage_types", "accepted_usages", usages, self.usage),
            )
        ]

    def actor(self, actor: str) -> Markup | str:
        """Who did it: an officer by name, a web or API client by its keyed hash, the CLI."""
        if actor.startswith("officer:"):
            return Markup(escape(self._x["actor_officer"])).format(
                name=self.text(actor.removeprefix("officer:"))
            )
        client = _CLIENT.fullmatch(actor)
        if client is not None:
            return Markup(escape(self._x["actor_client"])).format(
                channel=self._x[f"actor_{client.group(1)}"], key=self.name(client.group(2))
            )
        return self.coded("actor_", actor)

    def field(self, key: str) -> Markup | str:
        """A form field's label (the field vocabulary), else its key."""
        label = self._t.field(key)
        return self.code(key) if label == key else label

    def validity(self, start: datetime, end: datetime) -> Markup:
        return Markup(escape(self._x["validity_range"])).format(
            start=self.time(start), end=self.time(end)
        )

    def time(self, value: datetime, format: str = "%Y-%m-%d %H:%M") -> Markup:
        return Markup('<time datetime="{}">{}</time>').format(
            value.isoformat(), taipei_time(value, format)
        )

    def value(self, value: Any) -> Markup | str:
        """A stored value: nothing → "—", yes/no → ✓/✗, a list → separated; masked values
        arrive masked already."""
        if value is None or value == "":
            return _NOTHING
        if value is True:
            return "✓"
        if value is False:
            return "✗"
        if isinstance(value, Mapping):
            return self.join(
                [Markup("<code>{}</code>={}").format(k, self.value(v)) for k, v in value.items()]
            )
        if isinstance(value, list | tuple):
            return self.join([self.value(v) for v in value])
        return self.text(value)

    def identity(self, key: str, value: Any) -> Markup | str:
        """What the card says of its holder (``card_rank`` worded)."""
        return self.rank(value) if key == "card_rank" else self.value(value)

    def diff(self, key: str, value: Any) -> Markup | str:
        """A value of an audit row's diff, worded where its key says what it holds."""
        if value is None or value == "":
            return _NOTHING
        if key == "revocation" and isinstance(value, Mapping):
            return self.join([self._revocation_part(k, v) for k, v in value.items()])
        if key in ("applicant_type", "usage_type"):
            word = self.type if key == "applicant_type" else self.usage
            if isinstance(value, Mapping) and set(value) == {"from", "to"}:
                return Markup("{} → {}").format(word(value["from"]), word(value["to"]))
            if isinstance(value, str):
                return word(value)
        if key == "ca" and isinstance(value, str):
            return self.ca(value)
        if key == "what" and isinstance(value, str):
            return self.coded("what_", value)
        if key == "via" and isinstance(value, str):
            return self.actor(value)
        if key in ("certificate", "email", "account") and isinstance(value, str):
            return self.name(value)
        return self.value(value)

    def _revocation_part(self, key: str, value: Any) -> Markup:
        if key in ("status", "source", "policy") and isinstance(value, str):
            prefix = {"status": "revocation_status_", "source": "revocation_source_"}
            shown = self.coded(prefix.get(key, "policy_"), value)
        else:
            shown = self.value(value)
        return Markup("<code>{}</code>={}").format(key, shown)

    def policy(self, code: str) -> Markup | str:
        return self.coded("policy_", code)

    def audit_reason(self, reason: str | None) -> Markup | str:
        return self.coded("audit_", reason)


def _words(request: Request, states: Mapping[str, Labels] | None = None) -> Words:
    t = translator_of(request)
    catalog = portal_of(request).catalog
    return Words(
        t,
        _texts(t),
        types={code: a.labels for code, a in catalog.applicant_types.items()},
        usages={code: u.labels for code, u in catalog.usage_types.items()},
        states=states,
    )


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _via(request: Request) -> str:
    return actor(request, "web")


def _token(request: Request) -> str:
    return request.cookies.get(officer_cookie_name(portal_of(request).settings)) or ""


async def _session(request: Request) -> OfficerSessionView | None:
    portal = portal_of(request)
    return await off_loop(portal.console.session, _token(request))


def _page(
    request: Request,
    template: str,
    session: OfficerSessionView,
    *,
    title: str,
    status_code: int = 200,
    words: Words | None = None,
    **context: Any,
) -> HTMLResponse:
    t = translator_of(request)
    x = _texts(t)
    return render(
        request,
        template,
        title=f"{title} – {x['console']}",
        status_code=status_code,
        x=x,
        w=words or _words(request),
        officer=session.officer,
        is_admin=session.officer.role == ADMIN,
        **context,
    )


Handler = Callable[[Request, OfficerSessionView], Awaitable[Response]]


async def _signed_in(request: Request, handler: Handler) -> Response:
    """``handler`` with the live console session, or back to the login."""
    session = await _session(request)
    if session is None:
        return _see_other(HOME)
    return await handler(request, session)


# -- login -------------------------------------------------------------------------------------


@router.get(HOME, response_model=None)
async def console_home(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        portal = portal_of(request)
        t = translator_of(request)
        return render(
            request,
            "officer_login.html",
            title=t.label(_TEXTS["console"]),
            x=_texts(t),
            body_data={"agent-url": portal.settings.agent_url},
            script_data={"messages": t.script_messages()},
        )
    queue = await off_loop(portal_of(request).console.queue, session.officer)
    return _page(
        request,
        "officer_queue.html",
        session,
        title=_texts(translator_of(request))["queue"],
        registrations=queue,
    )


class ConsoleLoginOut(BaseModel):
    officer: str
    role: str


@api_router.post("/login/challenge")
async def console_challenge(request: Request, portal: PortalDep) -> ChallengeOut:
    """The console login: a single-use challenge for the officer's card to sign."""
    challenge = await limited(
        portal, LOGIN_LIMIT, request, portal.console.issue_challenge, origin=portal.origin
    )
    return ChallengeOut.of(challenge)


@api_router.post("/login")
async def console_login(
    body: CardIn, request: Request, response: Response, portal: PortalDep
) -> ConsoleLoginOut:
    """The officer's card answer; sets the console cookie. ``not_authorized`` for a card
    that is not on the officer list."""
    via = _via(request)
    result = await limited(
        portal,
        LOGIN_LIMIT,
        request,
        lambda: portal.console.login(body.response(), origin=portal.origin, via=via),
    )
    set_officer_cookie(response, result.token, portal.settings)
    return ConsoleLoginOut(officer=result.officer.name, role=result.officer.role)


@router.post(f"{HOME}/logout", response_model=None)
async def console_logout(request: Request) -> Response:
    portal = portal_of(request)
    await off_loop(portal.console.logout, _token(request), via=_via(request))
    response = _see_other(HOME)
    clear_officer_cookie(response, portal.settings)
    return response


# -- registrations -----------------------------------------------------------------------------


async def _registration_page(
    request: Request,
    session: OfficerSessionView,
    registration_id: str,
    *,
    errors: dict[str, str] | None = None,
    reason: str = "",
    status_code: int = 200,
) -> Response:
    portal = portal_of(request)
    detail = await off_loop(
        portal.console.registration, session.officer, registration_id, via=_via(request)
    )
    x = _texts(translator_of(request))
    done = request.query_params.get("done")
    return _page(
        request,
        "officer_registration.html",
        session,
        title=f"{x['registration']} {detail.registration.id[:8]}",
        status_code=status_code,
        detail=detail,
        words=_words(request, detail.states),
        done=x.get(f"done_{done}") if done in ("approved", "rejected") else None,
        errors=errors or {},
        reason=reason,
    )


@router.get(HOME + "/registrations/{registration_id}", response_model=None)
async def registration_page(registration_id: str, request: Request) -> Response:
    async def show(request: Request, session: OfficerSessionView) -> Response:
        return await _registration_page(request, session, registration_id)

    return await _signed_in(request, show)


@router.post(HOME + "/registrations/{registration_id}/approve", response_model=None)
async def registration_approve(registration_id: str, request: Request) -> Response:
    async def approve(request: Request, session: OfficerSessionView) -> Response:
        portal = portal_of(request)
        await off_loop(portal.console.approve, session.officer, registration_id, via=_via(request))
        return _see_other(f"{HOME}/registrations/{registration_id}?done=approved")

    return await _signed_in(request, approve)


@router.post(HOME + "/registrations/{registration_id}/reject", response_model=None)
async def registration_reject(registration_id: str, request: Request) -> Response:
    async def reject(request: Request, session: OfficerSessionView) -> Response:
        portal = portal_of(request)
        reason = (await form_values(request)).get("reason", "")
        try:
            await off_loop(
                portal.console.reject,
                session.officer,
                registration_id,
                reason=reason,
                via=_via(request),
            )
        except RefusedError as error:
            if error.code != "field_required" and error.code != "field_too_long":
                raise
            language = translator_of(request).language
            errors = errors_by_field(error, language, ("reason",), other="reason")
            return await _registration_page(
                request, session, registration_id, errors=errors, reason=reason,
                status_code=status_for(error),
            )  # fmt: skip
        return _see_other(f"{HOME}/registrations/{registration_id}?done=rejected")

    return await _signed_in(request, reject)


# -- accounts ----------------------------------------------------------------------------------


@router.get(HOME + "/accounts", response_model=None)
async def accounts_page(request: Request) -> Response:
    async def show(request: Request, session: OfficerSessionView) -> Response:
        return _search_page(request, session)

    return await _signed_in(request, show)


@router.post(HOME + "/accounts", response_model=None)
async def accounts_search(request: Request) -> Response:
    """The search is a form post: a national ID never sits in a URL (history, Referer, logs)."""

    async def search(request: Request, session: OfficerSessionView) -> Response:
        portal = portal_of(request)
        query = (await form_values(request)).get("q", "")
        try:
            found = await off_loop(portal.console.search, session.officer, query, via=_via(request))
        except RefusedError as error:
            language = translator_of(request).language
            errors = errors_by_field(error, language, ("q",), other="q")
            return _search_page(request, session, errors=errors, status_code=status_for(error))
        shown = "" if found.kind == "national_id" else query
        return _search_page(request, session, query=shown, hits=found.hits)

    return await _signed_in(request, search)


def _search_page(
    request: Request,
    session: OfficerSessionView,
    *,
    query: str = "",
    hits: Sequence[AccountHit] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return _page(
        request,
        "officer_accounts.html",
        session,
        title=_texts(translator_of(request))["search"],
        status_code=status_code,
        query=query,
        hits=hits,
        errors=errors or {},
    )


async def _account_page(
    request: Request,
    session: OfficerSessionView,
    account_id: int,
    *,
    errors: dict[str, str] | None = None,
    reason: str = "",
    status_code: int = 200,
) -> Response:
    portal = portal_of(request)
    detail = await off_loop(portal.console.account, session.officer, account_id, via=_via(request))
    x = _texts(translator_of(request))
    done = request.query_params.get("done")
    return _page(
        request,
        "officer_account.html",
        session,
        title=f"{x['account']} {detail.account.account}",
        status_code=status_code,
        detail=detail,
        columns=[translator_of(request).label(labels) for _, labels in COLUMNS],
        done=x.get(f"done_{done}") if done in ("suspended", "reactivated") else None,
        errors=errors or {},
        reason=reason,
    )


@router.get(HOME + "/accounts/{account_id}", response_model=None)
async def account_page(account_id: AccountId, request: Request) -> Response:
    async def show(request: Request, session: OfficerSessionView) -> Response:
        return await _account_page(request, session, account_id)

    return await _signed_in(request, show)


_DONE: Final = {"suspend": "suspended", "reactivate": "reactivated"}


def _account_change(action: str) -> Callable[[int, Request], Awaitable[Response]]:
    """停用 (``suspend``) or 恢復 (``reactivate``) an account: admins only (the service says)."""

    async def change(account_id: AccountId, request: Request) -> Response:
        async def act(request: Request, session: OfficerSessionView) -> Response:
            portal = portal_of(request)
            reason = (await form_values(request)).get("reason", "")
            call = getattr(portal.console, action)
            try:
                await off_loop(call, session.officer, account_id, reason=reason, via=_via(request))
            except RefusedError as error:
                if error.code not in ("field_required", "field_too_long"):
                    raise
                language = translator_of(request).language
                errors = errors_by_field(error, language, ("reason",), other="reason")
                return await _account_page(
                    request, session, account_id, errors=errors, reason=reason,
                    status_code=status_for(error),
                )  # fmt: skip
            return _see_other(f"{HOME}/accounts/{account_id}?done={_DONE[action]}")

        return await _signed_in(request, act)

    return change


router.add_api_route(
    HOME + "/accounts/{account_id}/suspend", _account_change("suspend"), methods=["POST"],
    response_model=None,
)  # fmt: skip
router.add_api_route(
    HOME + "/accounts/{account_id}/reactivate", _account_change("reactivate"), methods=["POST"],
    response_model=None,
)  # fmt: skip


# -- trust and audit ---------------------------------------------------------------------------


@router.get(HOME + "/trust", response_model=None)
async def trust_page(request: Request) -> Response:
    async def show(request: Request, session: OfficerSessionView) -> Response:
        overview = await off_loop(portal_of(request).console.trust, session.officer)
        x = _texts(translator_of(request))
        return _page(request, "officer_trust.html", session, title=x["trust"], overview=overview)

    return await _signed_in(request, show)


@router.get(HOME + "/audit", response_model=None)
async def audit_page(request: Request) -> Response:
    async def show(request: Request, session: OfficerSessionView) -> Response:
        require_admin(session.officer)  # the service checks each action too
        x = _texts(translator_of(request))
        return _page(request, "officer_audit.html", session, title=x["audit"], result=None)

    return await _signed_in(request, show)


@router.post(HOME + "/audit/verify", response_model=None)
async def audit_verify(request: Request) -> Response:
    async def verify(request: Request, session: OfficerSessionView) -> Response:
        result = await off_loop(
            portal_of(request).console.verify_audit, session.officer, via=_via(request)
        )
        x = _texts(translator_of(request))
        return _page(request, "officer_audit.html", session, title=x["audit"], result=result)

    return await _signed_in(request, verify)


@router.post(HOME + "/audit/export", response_model=None)
async def audit_export(request: Request) -> Response:
    async def export(request: Request, session: OfficerSessionView) -> Response:
        lines = await off_loop(
            portal_of(request).console.export_audit, session.officer, via=_via(request)
        )
        return StreamingResponse(
            lines,  # a blocking iterator: Starlette steps it in the thread pool
            media_type="application/jsonl; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="swreg-audit.jsonl"'},
        )

    return await _signed_in(request, export)


__all__ = ["api_router", "router"]
