"""One exception tree, rooted at :class:`SwregError`.

Every error a user can see carries a stable :class:`ErrorCode` (DESIGN.md §8), the form field it
concerns (when there is one) and details (for example ``tries_left``). Messages come from one
catalogue in zh-TW and English. Foreign exceptions (pyscard, SQLAlchemy, cryptography) are
translated at the adapter edge with ``raise ... from exc``::

    SwregError                      code, field, details; exit status 1 unless stated
    ├── RefusedError                a validation or business rule said no (exit 1)
    │   ├── FormError               several field errors at once (``.errors``)
    │   ├── CertificateError        certificate_*, identity_mismatch, signature_invalid
    │   ├── CardError               pin_incorrect (tries_left), card_locked
    │   ├── ChallengeError          challenge_expired, challenge_used
    │   └── WorkflowError           invalid_transition, registration_expired, ...
    ├── UsageError                  the command was called wrongly (exit 2)
    └── EnvironmentProblem          no reader, no card, no database (exit 3)
        └── DefinitionError         a workflow definition or plugin is broken (names file and line)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, ClassVar, Literal

Language = Literal["zh-TW", "en"]


class ErrorCode(StrEnum):
    CONSENT_REQUIRED = "consent_required"
    UNKNOWN_TYPE = "unknown_type"
    FIELD_REQUIRED = "field_required"
    FIELD_TOO_LONG = "field_too_long"
    INVALID_EMAIL = "invalid_email"
    INVALID_NATIONAL_ID = "invalid_national_id"
    INVALID_UBN = "invalid_ubn"
    INVALID_OID = "invalid_oid"
    INVALID_PHONE = "invalid_phone"
    INVALID_BIRTH_DATE = "invalid_birth_date"
    INVALID_CUSTOMS_OFFICE = "invalid_customs_office"
    INVALID_SPECIALIST_CODE = "invalid_specialist_code"
    INVALID_SUB_CARD = "invalid_sub_card"
    INVALID_VALUE = "invalid_value"
    PASSWORD_POLICY = "password_policy"
    PASSWORD_MISMATCH = "password_mismatch"
    PASSWORD_INCORRECT = "password_incorrect"
    ACCOUNT_EXISTS = "account_exists"
    ALREADY_REGISTERED = "already_registered"
    IOT_NOT_ALLOWED = "iot_not_allowed"
    NO_READER = "no_reader"
    NO_CARD = "no_card"
    PIN_INCORRECT = "pin_incorrect"
    CARD_LOCKED = "card_locked"
    CARD_ERROR = "card_error"
    HICOS_REQUIRED = "hicos_required"
    CERTIFICATE_MALFORMED = "certificate_malformed"
    CERTIFICATE_UNTRUSTED = "certificate_untrusted"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_NOT_YET_VALID = "certificate_not_yet_valid"
    CERTIFICATE_REVOKED = "certificate_revoked"
    REVOCATION_UNKNOWN = "revocation_unknown"
    CERTIFICATE_KEY_USAGE = "certificate_key_usage"
    CERTIFICATE_TYPE_MISMATCH = "certificate_type_mismatch"
    IDENTITY_MISMATCH = "identity_mismatch"
    SIGNATURE_INVALID = "signature_invalid"
    PROOF_REQUIRED = "proof_required"
    CHALLENGE_EXPIRED = "challenge_expired"
    CHALLENGE_USED = "challenge_used"
    REGISTRATION_EXPIRED = "registration_expired"
    REGISTRATION_NOT_FOUND = "registration_not_found"
    INVALID_TRANSITION = "invalid_transition"
    FILE_TOO_LARGE = "file_too_large"
    NOT_A_CERTIFICATE = "not_a_certificate"
    PRIVATE_KEY_REFUSED = "private_key_refused"
    RATE_LIMITED = "rate_limited"
    NOT_AUTHORIZED = "not_authorized"
    ACTIVATION_INVALID = "activation_invalid"
    ACTIVATION_EXPIRED = "activation_expired"
    ACCOUNT_INACTIVE = "account_inactive"
    ACCOUNT_SUSPENDED = "account_suspended"
    ACCOUNT_LOCKED = "account_locked"
    NOT_REGISTERED = "not_registered"
    SESSION_EXPIRED = "session_expired"
    CSRF_FAILED = "csrf_failed"
    REQUEST_TOO_LARGE = "request_too_large"
    MAIL_UNAVAILABLE = "mail_unavailable"
    MOBILE_ID_TIMEOUT = "mobile_id_timeout"
    MOBILE_ID_REJECTED = "mobile_id_rejected"
    MOBILE_ID_UNAVAILABLE = "mobile_id_unavailable"
    INTERNAL_ERROR = "internal_error"
    BAD_REQUEST = "bad_request"  # the framework's: an unreadable request
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    USAGE = "usage"
    DATABASE_UNAVAILABLE = "database_unavailable"
    DEFINITION_INVALID = "definition_invalid"


_MESSAGES: Mapping[ErrorCode, tuple[str, str]] = {
    ErrorCode.CONSENT_REQUIRED: (
        "請勾選「我已經詳細閱讀並同意資料使用聲明」",
        "You must read and accept the data-use statement",
    ),
    ErrorCode.UNKNOWN_TYPE: ("未知的申請類別或屬性", "Unknown applicant type"),
    ErrorCode.FIELD_REQUIRED: ("此欄位必填", "This field is required"),
    ErrorCode.FIELD_TOO_LONG: ("輸入內容過長", "The value is too long"),
    ErrorCode.INVALID_EMAIL: ("電子郵件格式錯誤", "Invalid e-mail address"),
    ErrorCode.INVALID_NATIONAL_ID: (
        "身分證字號或居留證號格式錯誤",
        "Invalid national ID or resident certificate number",
    ),
    ErrorCode.INVALID_UBN: ("統一編號錯誤", "Invalid unified business number (UBN)"),
    ErrorCode.INVALID_OID: ("OID 格式錯誤", "Invalid OID"),
    ErrorCode.INVALID_PHONE: ("聯絡電話格式錯誤", "Invalid phone number"),
    ErrorCode.INVALID_BIRTH_DATE: ("出生年月日錯誤", "Invalid birth date"),
    ErrorCode.INVALID_CUSTOMS_OFFICE: ("關別錯誤", "Invalid customs office code"),
    ErrorCode.INVALID_SPECIALIST_CODE: (
        "報關專責人員代碼應為5碼數字",
        "The customs specialist code must be 5 digits",
    ),
    ErrorCode.INVALID_SUB_CARD: ("附卡編號錯誤", "Invalid secondary-card number"),
    ErrorCode.INVALID_VALUE: ("輸入值錯誤", "Invalid value"),
    ErrorCode.PASSWORD_POLICY: (
        "密碼長度至少8碼，且至少包含數字1碼、大寫英文1碼、小寫英文1碼",
        "The password needs at least 8 characters with a digit, an upper- and a lower-case letter",
    ),
    ErrorCode.PASSWORD_INCORRECT: ("密碼錯誤", "The password is incorrect"),
    ErrorCode.PASSWORD_MISMATCH: ("確認密碼與密碼不符", "The passwords do not match"),
    ErrorCode.ACCOUNT_EXISTS: ("用戶姓名已存在", "This account already exists"),
    ErrorCode.ALREADY_REGISTERED: (
        "您已註冊本系統，系統將為您導回首頁",
        "You have already registered; returning to the home page",
    ),
    ErrorCode.IOT_NOT_ALLOWED: (
        "此屬性不可申請物聯網權限",
        "IoT permission cannot be requested for this applicant type",
    ),
    ErrorCode.NO_READER: ("找不到讀卡機", "No card reader found"),
    ErrorCode.NO_CARD: ("未插入IC卡", "No card in the reader"),
    ErrorCode.PIN_INCORRECT: ("PIN碼錯誤", "Incorrect PIN"),
    ErrorCode.CARD_LOCKED: ("IC卡已鎖卡", "The card is locked"),
    ErrorCode.CARD_ERROR: ("IC卡讀取錯誤", "The card could not be read"),
    ErrorCode.HICOS_REQUIRED: (
        "此卡片須透過 HiCOS 卡片管理工具（跨平台網頁元件）簽章，請改用網頁註冊",
        "This card signs only through the HiCOS component (HiPKI); register in the web wizard",
    ),
    ErrorCode.CERTIFICATE_MALFORMED: ("憑證格式錯誤", "The certificate is malformed"),
    ErrorCode.CERTIFICATE_UNTRUSTED: (
        "憑證非由受信任的憑證管理中心簽發",
        "The certificate was not issued by a trusted certification authority",
    ),
    ErrorCode.CERTIFICATE_EXPIRED: ("憑證已逾期", "The certificate has expired"),
    ErrorCode.CERTIFICATE_NOT_YET_VALID: ("憑證尚未生效", "The certificate is not yet valid"),
    ErrorCode.CERTIFICATE_REVOKED: ("憑證已廢止", "The certificate has been revoked"),
    ErrorCode.REVOCATION_UNKNOWN: (
        "無法確認憑證是否已廢止，請稍後再試",
        "Whether the certificate has been revoked cannot be checked now; try again later",
    ),
    ErrorCode.CERTIFICATE_KEY_USAGE: (
        "此憑證不可用於簽章",
        "The certificate may not be used for signing",
    ),
    ErrorCode.CERTIFICATE_TYPE_MISMATCH: (
        "憑證種類不符合此申請類別",
        "This kind of certificate is not accepted for this applicant type",
    ),
    ErrorCode.IDENTITY_MISMATCH: (
        "憑證與輸入的資料不符",
        "The certificate does not match the data entered",
    ),
    ErrorCode.SIGNATURE_INVALID: ("簽章驗證失敗", "The signature does not verify"),
    ErrorCode.PROOF_REQUIRED: (
        "請證明您持有此憑證：以憑證登入，或以憑證的私密金鑰簽署驗證碼",
        "Prove that the certificate is yours: log in with your card, or sign the challenge "
        "with the certificate's private key",
    ),
    ErrorCode.CHALLENGE_EXPIRED: ("驗證碼已逾時，請重新讀卡", "The challenge has expired"),
    ErrorCode.CHALLENGE_USED: ("驗證碼已使用過", "The challenge has already been used"),
    ErrorCode.REGISTRATION_EXPIRED: (
        "註冊作業已逾時，請重新申請",
        "The registration has expired; please start again",
    ),
    ErrorCode.REGISTRATION_NOT_FOUND: ("查無此註冊作業", "No such registration"),
    ErrorCode.INVALID_TRANSITION: (
        "目前步驟不可執行此操作",
        "This action is not possible at the current step",
    ),
    ErrorCode.FILE_TOO_LARGE: ("檔案過大", "The file is too large"),
    ErrorCode.NOT_A_CERTIFICATE: ("檔案不是憑證", "The file is not a certificate"),
    ErrorCode.PRIVATE_KEY_REFUSED: (
        "請勿上傳私密金鑰，只需上傳憑證(.cer)",
        "Do not upload private keys; upload the certificate (.cer) only",
    ),
    ErrorCode.RATE_LIMITED: ("操作過於頻繁，請稍後再試", "Too many requests; try again later"),
    ErrorCode.NOT_AUTHORIZED: ("無權限執行此操作", "Not authorized"),
    ErrorCode.ACTIVATION_INVALID: (
        "此連結無效或已使用過",
        "This link is invalid or was already used",
    ),
    ErrorCode.ACTIVATION_EXPIRED: ("此連結已逾期", "This link has expired"),
    ErrorCode.ACCOUNT_INACTIVE: (
        "帳號尚未啟用，請至您的電子郵件Email進行帳號啟用",
        "The account is not activated yet; use the link in your e-mail",
    ),
    ErrorCode.ACCOUNT_SUSPENDED: (
        "帳號已停用，請洽關港貿單一窗口客服",
        "The account is suspended; contact the Single Window help desk",
    ),
    ErrorCode.ACCOUNT_LOCKED: (
        "密碼錯誤次數過多，帳號已鎖定，請以憑證重設密碼",
        "Too many wrong passwords: the account is locked; reset the password with your card",
    ),
    ErrorCode.SESSION_EXPIRED: ("登入逾時，請重新登入", "The session has expired; log in again"),
    ErrorCode.NOT_REGISTERED: (
        "此憑證尚未註冊，請先進行憑證註冊",
        "This certificate is not registered; please register first",
    ),
    ErrorCode.CSRF_FAILED: (
        "表單已逾時或來源不明，請重新整理頁面",
        "The form expired or came from elsewhere; reload the page",
    ),
    ErrorCode.REQUEST_TOO_LARGE: ("傳送的資料過大", "The request is too large"),
    ErrorCode.MAIL_UNAVAILABLE: ("郵件伺服器無法使用", "The mail server is not available"),
    ErrorCode.MOBILE_ID_TIMEOUT: (
        "行動自然人憑證未在時限內完成確認，請重新操作",
        "The mobile ID was not confirmed in time; try again",
    ),
    ErrorCode.MOBILE_ID_REJECTED: (
        "行動自然人憑證未完成確認：手機上已取消，或此身分證字號尚未申請行動自然人憑證或綁定裝置"
        "（請至內政部行動自然人憑證App申請）",
        "The mobile ID was not confirmed: it was cancelled on the phone, or this ID has no "
        "mobile citizen certificate or bound device (apply in MOI's mobile ID app)",
    ),
    ErrorCode.MOBILE_ID_UNAVAILABLE: (
        "行動自然人憑證服務暫時無法使用，請稍後再試",
        "The mobile ID service is not available; try again later",
    ),
    ErrorCode.INTERNAL_ERROR: ("系統發生錯誤，請稍後再試", "An internal error occurred; try again"),
    ErrorCode.BAD_REQUEST: ("請求格式錯誤", "Bad request"),
    ErrorCode.NOT_FOUND: ("找不到此頁面", "Page not found"),
    ErrorCode.METHOD_NOT_ALLOWED: ("不支援此操作", "Method not allowed"),
    ErrorCode.USAGE: ("指令使用方式錯誤", "Usage error"),
    ErrorCode.DATABASE_UNAVAILABLE: ("資料庫無法使用", "The database is not available"),
    ErrorCode.DEFINITION_INVALID: ("流程定義錯誤", "The workflow definition is invalid"),
}


def message_for(code: ErrorCode | str, language: Language = "zh-TW") -> str:
    """The catalogue message of ``code`` in ``language``."""
    zh, en = _MESSAGES[ErrorCode(code)]
    return zh if language == "zh-TW" else en


class SwregError(Exception):
    """Base of every error swreg raises on purpose.

    ``code`` is stable; ``field`` names the form field concerned; ``details`` carries
    machine-readable extras (``tries_left``, ``line``, ...). ``detail`` is a free-form
    explanation in English for the operator and the API client (the CLI prints it, the HTTP API
    returns it as ``detail``, logs carry it); :meth:`message`, what a page shows a person, is the
    catalogue's wording in one language and never includes it.
    """

    exit_status: ClassVar[int] = 1
    default_code: ClassVar[ErrorCode] = ErrorCode.INVALID_VALUE

    def __init__(
        self,
        code: ErrorCode | str | None = None,
        *,
        field: str | None = None,
        detail: str | None = None,
        **details: Any,
    ) -> None:
        self.code = ErrorCode(code) if code is not None else self.default_code
        self.field = field
        self.detail = detail
        self.details = details
        super().__init__(self.message("en") + (f": {detail}" if detail else ""))

    def message(self, language: Language = "zh-TW") -> str:
        """The catalogue's wording of the code in ``language`` (with the tries left of a wrong
        PIN): all in one language, so without :attr:`detail`."""
        text = message_for(self.code, language)
        if self.code is ErrorCode.PIN_INCORRECT and self.details.get("tries_left") is not None:
            left = self.details["tries_left"]
            text += f"，剩餘{left}次機會" if language == "zh-TW" else f" ({left} tries left)"
        return text

    @property
    def errors(self) -> tuple[SwregError, ...]:
        """The individual errors (one, except for :class:`FormError`)."""
        return (self,)

    def as_dicts(self, language: Language = "zh-TW") -> list[dict[str, Any]]:
        """``[{field, code, message, detail?, ...details}]`` as the CLI and HTTP API report them
        (``detail`` only when there is one)."""
        return [
            {
                "field": e.field,
                "code": str(e.code),
                "message": e.message(language),
                **({"detail": e.detail} if e.detail else {}),
                **e.details,
            }
            for e in self.errors
        ]


class RefusedError(SwregError):
    """A validation or business rule refused the request (exit status 1)."""


class FormError(RefusedError):
    """Several field errors found while validating one form."""

    def __init__(self, errors: Iterable[SwregError]) -> None:
        self._errors = tuple(errors)
        if not self._errors:
            raise ValueError("FormError needs at least one error")
        first = self._errors[0]
        super().__init__(first.code, field=first.field, detail=first.detail, **first.details)

    @property
    def errors(self) -> tuple[SwregError, ...]:
        return self._errors


class CertificateError(RefusedError):
    """The certificate failed a check of the card check (DESIGN.md §4)."""

    default_code = ErrorCode.CERTIFICATE_MALFORMED


class CardError(RefusedError):
    """The card refused: wrong PIN (with ``tries_left``), locked, unreadable."""

    default_code = ErrorCode.CARD_ERROR


class ChallengeError(RefusedError):
    default_code = ErrorCode.CHALLENGE_EXPIRED


class WorkflowError(RefusedError):
    default_code = ErrorCode.INVALID_TRANSITION


class UsageError(SwregError):
    """The command was called wrongly (exit status 2)."""

    exit_status = 2
    default_code = ErrorCode.USAGE


class EnvironmentProblem(SwregError):
    """Something outside the request is missing: reader, card, database (exit status 3)."""

    exit_status = 3
    default_code = ErrorCode.NO_READER


class DefinitionError(EnvironmentProblem):
    """A workflow definition or plugin declaration is invalid; names the source and line."""

    default_code = ErrorCode.DEFINITION_INVALID

    def __init__(self, detail: str, *, source: str = "<definition>", line: int | None = None):
        where = f"{source}:{line}" if line is not None else source
        super().__init__(detail=f"{where}: {detail}", source=source, line=line)
