"""The portal's words in zh-TW and English, and how a request picks its language.

Error messages come from the engine's catalogue (:func:`engine.message_for`); applicant-type and
step labels from the plugins' :class:`~engine.Labels`. Everything else a page or script shows is
in :data:`TEXTS`, keyed by a short name. The language is, in order: ``?lang=``, the ``lang``
cookie, ``Accept-Language`` (API only: pages stay zh-TW until the language switch), then zh-TW.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from starlette.datastructures import Headers, QueryParams
from starlette.requests import HTTPConnection
from starlette.types import Scope

from engine._errors import ErrorCode, Language, message_for
from engine.core.declarations import Labels

LANGUAGES: Final[tuple[Language, ...]] = ("zh-TW", "en")
LANG_COOKIE: Final = "lang"
DEFAULT_LANGUAGE: Final[Language] = "zh-TW"


def parse_language(value: str | None) -> Language | None:
    """``zh-TW``/``zh``/``en``... as one of :data:`LANGUAGES`, or None when it is neither."""
    if not value:
        return None
    tag = value.strip().lower()
    if tag.startswith("zh"):
        return "zh-TW"
    if tag == "en" or tag.startswith("en-"):
        return "en"
    return None


def _accept_language(header: str) -> Language | None:
    """The first supported language of an ``Accept-Language`` header, by quality."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, index, tag))
    for negative_quality, _, tag in sorted(ranked):
        language = parse_language(tag)
        if language is not None and negative_quality < 0:
            return language
    return None


def query_language(scope: Scope) -> Language | None:
    """The language asked for with ``?lang=`` (the page then remembers it in a cookie)."""
    return parse_language(QueryParams(scope.get("query_string", b"").decode("latin-1")).get("lang"))


def language_of(connection: HTTPConnection, *, negotiate: bool = True) -> Language:
    """The language of a request: ``?lang=``, the ``lang`` cookie, ``Accept-Language`` (unless
    ``negotiate`` is false), then zh-TW.

    Pages do not negotiate: they are zh-TW until the visitor uses the language switch, whatever
    the browser's preferences; the API (and the page's script, which sends the page's language
    as ``Accept-Language``) does.
    """
    header = Headers(scope=connection.scope).get("accept-language", "") if negotiate else ""
    return (
        query_language(connection.scope)
        or parse_language(connection.cookies.get(LANG_COOKIE))
        or _accept_language(header)
        or DEFAULT_LANGUAGE
    )


def page_language(connection: HTTPConnection) -> Language:
    """The language of a page: ``?lang=``, the ``lang`` cookie, then zh-TW."""
    return language_of(connection, negotiate=False)


# fmt: off
TEXTS: Final[Mapping[str, tuple[str, str]]] = {
    # site and menus
    "site": ("關港貿單一窗口", "Customs-Port-Trade Single Window"),
    "skip": ("跳到主要內容", "Skip to main content"),
    "home": ("首頁", "Home"),
    "menu": ("功能選單", "Menu"),
    "login": ("憑證登入", "Certificate login"),
    "renewal": ("憑證更換作業", "Certificate renewal"),
    "menu_register": ("註冊", "Register"),
    "forgot_password": ("忘記密碼", "Forgot password"),
    "customs_register": ("通關憑證註冊", "Customs certificate registration"),
    "customs_query": ("通關憑證查詢", "Customs certificate query"),
    "register": ("憑證註冊", "Certificate registration"),
    "switch_language": ("English", "中文"),
    "steps": ("註冊步驟", "Registration steps"),
    "register_title": ("自然人/工商憑證註冊", "Citizen and business certificate registration"),
    "step_title": ("步驟{n} {step}", "Step {n}: {step}"),
    "colon": ("：", ": "),
    "full_stop": ("。", ". "),
    "list_separator": ("、", ", "),
    "noscript_card": (
        "讀取憑證卡需要啟用 JavaScript。", "JavaScript is required to read the card."
    ),
    "error_prefix": ("錯誤", "Error"),
    "error_summary": ("請修正下列錯誤", "There is a problem"),
    "home_intro": (
        "欲使用單一窗口憑證通關服務各項功能前，請先以『工商憑證/組織團體憑證卡』或『自然人憑證/居留證』"
        "實體晶片憑證卡進行「憑證註冊」，註冊成功後即可使用該憑證卡登入。",
        "Before using the Single Window's certificate services, register with your smart card "
        "(business, organisation, citizen or resident certificate); then log in with that card.",
    ),
    # step 1
    "step_intro_category": (
        "步驟{n}、註冊 [申請類別] 步驟，使用者選擇 [個人] 或 [企業] 其中一項申請類別後，"
        "按 [下一步] 進入下一步驟。",
        "Step {n}: choose [Individual] or [Enterprise] and the type, then press [Next].",
    ),
    "category": ("類別", "Category"),
    "attribute": ("屬性", "Type"),
    "iot_row": ("物聯網", "IoT"),
    "iot": ("申請物聯網權限", "Request IoT permission"),
    "iot_hint": ("（可申請的屬性：{types}）", "(available to: {types})"),
    "consent": (
        "我已經詳細閱讀並同意資料使用聲明",
        "I have read and accept the data-use statement",
    ),
    "privacy": ("資料使用聲明", "Data-use statement"),
    "back": ("上一步", "Back"),
    "next": ("下一步", "Next"),
    "cancel": ("取消", "Cancel"),
    "required": ("(必填)", "(required)"),
    # step 2
    "step_intro_card_check": (
        "步驟{n}、[憑證檢查] 步驟。若憑證已註冊過，將提示 [您已註冊本系統，系統將為您導回首頁]。"
        "若憑證尚未註冊並完成檢查，則顯示 [檢查完畢] 後進入下一步驟。",
        "Step {n}: the card check. A card that is already registered is told so and sent back "
        "to the home page; otherwise the page shows [Check complete] and moves on.",
    ),
    "card_help_1": (
        "此憑證會做為使用者登入之用，請插入憑證到讀卡機之後，輸入PIN碼，按下 [下一步]。"
        "系統會檢查使用者上傳的憑證與所輸入的用戶帳號是否符合，檢查通過後才允許建立帳號。",
        "This certificate is what you will log in with. Insert the card, enter its PIN and press "
        "[Next]. The system checks the certificate against your account data before creating it.",
    ),
    "card_help_2": (
        "插入卡片至讀卡機後，待系統出現卡片讀取完成後，才可進行送出動作。",
        "After inserting the card, wait until it has been read before continuing.",
    ),
    "card_help_3": (
        "若您使用多台讀卡機設備，請使用「開啟偵測多台讀卡機」功能，並選擇對應之讀卡機。",
        "With several card readers, use [Detect multiple card readers] and choose the reader.",
    ),
    "reader": ("讀卡機", "Card reader"),
    "reader_default": ("第一台讀卡機", "First card reader"),
    "detect_readers": ("開啟偵測多台讀卡機", "Detect multiple card readers"),
    "pin": ("PIN碼", "PIN"),
    "pin_placeholder": ("請輸入PIN碼", "Enter the PIN"),
    "pin_note": (
        "PIN碼只會交給您電腦上的讀卡元件，不會傳送到伺服器。",
        "The PIN goes only to the card component on your computer, never to the server.",
    ),
    "moica_apply": (
        "若尚未申請自然人憑證，請參考申請辦法",
        "No citizen certificate yet? See how to apply",
    ),
    "status_connecting": ("連線讀卡元件中…", "Connecting to the card component…"),
    "status_signing": ("讀取卡片並簽章中…", "Reading the card and signing…"),
    "status_checking": ("檢查憑證中…", "Checking the certificate…"),
    "status_done": ("檢查完畢", "Check complete"),
    "status_readers_found": ("找到 {count} 台讀卡機", "{count} card reader(s) found"),
    "status_hipki": ("使用 HiCOS 跨平台網頁元件", "Using the HiCOS web component"),
    "agent_missing_title": ("找不到讀卡元件", "No card component found"),
    "agent_missing_text": (
        "本網站需要讀卡元件（WebSocket 元件）才能讀取憑證卡。請安裝並啟動 swreg 讀卡元件，"
        "或安裝中華電信 HiCOS 卡片管理工具（跨平台網頁元件）後重新整理本頁。",
        "This site needs a card component (the WebSocket component) to read your card. Install "
        "and start the swreg card agent, or install CHT's HiCOS card tool (web component), then "
        "reload this page.",
    ),
    "agent_missing_swreg": ("啟動 swreg 讀卡元件：", "Start the swreg card agent:"),
    "agent_missing_hicos": (
        "或下載 HiCOS 卡片管理工具（Windows）：",
        "Or download the HiCOS card tool (Windows):",
    ),
    "agent_missing_other": (
        "Mac 請安裝 HiPKILocalSignServer.pkg，Linux 請安裝 HiPKILocalSignServerApp"
        "（內政部憑證管理中心網站下載）。",
        "On a Mac install HiPKILocalSignServer.pkg, on Linux HiPKILocalSignServerApp "
        "(from the MOICA web site).",
    ),
    "hipki_untrusted": (
        "此網站尚未加入 HiCOS 元件的信任網站清單，請依元件提示加入後重試。",
        "This site is not yet trusted by the HiCOS component; add it when asked and retry.",
    ),
    "hipki_cancelled": ("使用者已取消", "Cancelled"),
    "hipki_failed": ("讀卡元件發生錯誤", "The card component reported an error"),
    "popup_blocked": (
        "瀏覽器封鎖了讀卡元件視窗，請允許本站開啟彈出式視窗後重試。",
        "The browser blocked the card component's window; allow pop-ups for this site and retry.",
    ),
    "network_error": ("網路連線錯誤，請稍後再試", "Network error; please try again"),
    "status_hipki_readers": (
        "使用 HiCOS 跨平台網頁元件 {version}，找到 {count} 台讀卡機",
        "Using the HiCOS web component {version}; {count} card reader(s) found",
    ),
    "status_hipki_trusted": (
        "已加入 HiCOS 元件的信任網站，請重新執行",
        "The HiCOS component now trusts this site; please try again",
    ),
    "hipki_trust": ("加入 HiCOS 元件信任網站", "Trust this site in the HiCOS component"),
    "hipki_missing": (
        "未偵測到 HiCOS 跨平台網頁元件，請確認已安裝並啟動後重試。",
        "The HiCOS web component did not answer; make sure it is installed and running, "
        "then retry.",
    ),
    "hipki_forbidden": (
        "HiCOS 元件禁止本網站存取（禁止存取的網域）。",
        "The HiCOS component forbids this site (forbidden domain).",
    ),
    "hipki_pin_length": ("PIN碼長度錯誤", "Wrong PIN length"),
    "hipki_pin_format": ("PIN碼格式錯誤", "Wrong PIN format"),
    # Chrome's Local Network Access (agent.js; docs/cards.md)
    "local_network_title": ("允許本網站連線讀卡元件", "Let this site reach the card component"),
    "local_network_ask": (
        "本網站需要連線您電腦上的讀卡元件才能讀取憑證卡。瀏覽器會詢問是否允許本網站"
        "「存取這部裝置上的其他應用程式和服務」，請按「允許」。",
        "To read your card, this site connects to the card component on your computer. The "
        'browser will ask whether this site may "Access other apps and services on this '
        'device": choose Allow.',
    ),
    "local_network_denied_help": (
        "瀏覽器已封鎖本網站連線您電腦上的讀卡元件。請按網址列左側的網站資訊圖示，開啟「網站設定」，"
        "將「存取這部裝置上的其他應用程式和服務」改為「允許」，再按「開啟偵測多台讀卡機」重新偵測。",
        "The browser has blocked this site from reaching the card component on your computer. "
        "Click the site information icon at the left of the address bar, open Site settings, "
        'set "Apps on device" to Allow, then press [Detect multiple card readers] to detect '
        "again.",
    ),
    "local_network_denied": (
        "瀏覽器封鎖了本網站連線讀卡元件，請依「允許本網站連線讀卡元件」的說明設定後重新偵測。",
        "The browser blocked this site from reaching the card component; do as [Let this site "
        "reach the card component] says, then detect again.",
    ),
    "local_network_insecure": (
        "本網站不是以 https:// 開啟，瀏覽器不允許網頁連線您電腦上的讀卡元件。"
        "請改以 https:// 開頭的網址開啟本網站。",
        "This page was not opened over https://, so the browser does not let it reach the card "
        "component on your computer. Open the site at its https:// address.",
    ),
    # 行動自然人憑證 (the mobile citizen certificate, TW FidO; mobile.js, DESIGN.md §13)
    "bridge_choice": ("驗證方式", "Verify with"),
    "bridge_card": ("憑證IC卡（讀卡機）", "Certificate card (card reader)"),
    "bridge_mobile": ("行動自然人憑證", "Mobile citizen certificate"),
    "mobile_intro": (
        "請輸入身分證字號後按 [開始驗證]，再以手機上的行動自然人憑證App掃描QR Code"
        "（或在手機上按 [開啟行動自然人憑證App]），並於App中確認。",
        "Enter your national ID and press [Start], then scan the QR code with the mobile "
        "citizen certificate app on your phone (or, on the phone itself, press [Open the "
        "mobile ID app]) and confirm in the app.",
    ),
    "mobile_national_id": ("身分證字號", "National ID"),
    "mobile_push": ("推播至已綁定的手機", "Send to my phone (bound device)"),
    "mobile_start": ("開始驗證", "Start"),
    "mobile_restart": ("重新產生", "Start again"),
    "mobile_qr_alt": (
        "請以行動自然人憑證App掃描此QR Code",
        "Scan this QR code with the mobile citizen certificate app (行動自然人憑證)",
    ),
    "mobile_open_app": ("開啟行動自然人憑證App", "Open the mobile ID app"),
    "mobile_apply": (
        "若尚未申請行動自然人憑證，請參考申請說明",
        "No mobile citizen certificate yet? See how to get one",
    ),
    "mobile_starting": ("向行動自然人憑證服務申請中…", "Contacting the mobile ID service…"),
    "mobile_waiting": (
        "請以行動自然人憑證App掃描QR Code並於App中確認，等待確認中…",
        "Scan the QR code with the mobile ID app and confirm in the app; waiting…",
    ),
    "mobile_waiting_push": (
        "已推播通知至您已綁定的手機，請於行動自然人憑證App中確認，等待確認中…",
        "A notification was sent to your bound phone; confirm in the mobile ID app; waiting…",
    ),
    "mobile_approved": ("已於手機完成確認", "Confirmed on the phone"),
    "mobile_time_left": ("剩餘時間 {time}", "Time left {time}"),
    # steps 3, 4
    "step_intro_basic_data": (
        "步驟{n}、填寫 [基本資料] 步驟，填寫完後，請按下 [檢核是否存在] 檢查是否已註冊，"
        "未註冊過才能繼續進行註冊，填寫完畢後，按 [下一步] 進入下一步驟。",
        "Step {n}: fill in your basic data; press [Check availability] to see whether the account "
        "is free, then press [Next].",
    ),
    "step_intro_enterprise_info": (
        "步驟{n}、填寫 [企業資訊] 步驟，填寫完畢後，按 [下一步] 進入下一步驟。",
        "Step {n}: fill in the enterprise information, then press [Next].",
    ),
    "step_intro_other": (
        "步驟{n}、填寫 [{step}] 步驟，填寫完畢後，按 [下一步] 進入下一步驟。",
        "Step {n}: fill in [{step}], then press [Next].",
    ),
    "account": ("帳號", "Account"),
    "check_account": ("檢核是否存在", "Check availability"),
    "account_available": ("此帳號可使用", "This account is available"),
    "password_rule": (
        "密碼大小寫不同，包含長度至少8碼，數字至少1碼，大寫英文至少1碼，小寫英文至少1碼。",
        "Passwords are case-sensitive: at least 8 characters, with at least one digit, one "
        "upper-case and one lower-case letter.",
    ),
    "sub_card_hint": ("如有憑證附卡，請填寫附卡編號", "For a secondary card, enter its number"),
    "form_errors": ("請修正下列欄位", "Please correct the fields below"),
    # field labels (the field vocabulary of DESIGN.md §3)
    "field_email": ("電子郵件Email", "E-mail"),
    "field_contact_name": ("聯絡人姓名", "Contact name"),
    "field_national_id": ("身分證字號", "National ID / resident certificate number"),
    "field_birth_date": ("出生年月日", "Date of birth"),
    "field_phone": ("聯絡電話", "Phone"),
    "field_address": ("聯絡地址", "Address"),
    "field_password": ("設定登入密碼", "Password"),
    "field_password_confirm": ("確認密碼", "Confirm password"),
    "field_ubn": ("統一編號", "Unified business number (UBN)"),
    "field_sub_card": ("憑證附卡編號", "Secondary card number"),
    "field_company_name": ("公司名稱", "Company name"),
    "field_oid": ("OID", "OID"),
    "field_specialist_code": ("報關專責人員代碼", "Customs specialist code"),
    "field_customs_office": ("關別", "Customs office"),
    "field_usage_type": ("憑證使用類型", "Certificate usage type"),
    "field_consent": ("同意資料使用聲明", "Data-use statement accepted"),
    "field_iot": ("申請物聯網權限", "IoT permission requested"),
    "field_name": ("姓名", "Name"),
    "field_id_last4": ("身分證字號末四碼", "Last four ID digits"),
    "field_card_rank": ("卡別", "Card"),
    # step 5 and endings
    "step_intro_completed": (
        "步驟{n}、進行 [註冊完成] 步驟，按 [回首頁] 導回首頁。",
        "Step {n}: registration complete; press [Home] to return to the home page.",
    ),
    "completed": ("恭喜您已完成註冊程序。", "Congratulations, your registration is complete."),
    "completed_account": ("您的帳號：", "Your account: "),
    "completed_activate": (
        "請至您的電子郵件Email進行帳號啟用。",
        "Please activate your account with the link sent to your e-mail.",
    ),
    "completed_customs": (
        "通關專屬憑證請於[通關憑證註冊]進行匯入作業。",
        "Import customs-exclusive certificates in [Customs certificate registration].",
    ),
    "completed_iot": (
        "船公司/代理業、倉儲業、運輸業(保稅運貨工具業者)等人員欲使用物聯網全時監控功能，請至維護個人資訊作業。",
        "Staff of shipping companies/agents, warehouses and bonded transport operators who need "
        "IoT full-time monitoring should set it up under personal information maintenance.",
    ),
    "completed_renewal": (
        "請注意[自然人憑證/工商憑證]逾期前60天，請提前進行憑證展延或重新申請，並於本站[憑證更換作業]進行憑證更新。",
        "Note: 60 days before your [citizen/business certificate] expires, renew it or apply "
        "again, then update it here under [Certificate renewal].",
    ),
    "completed_login": (
        "為了確保安全性，完成註冊後並不會直接登入，請以憑證重新登入系統。",
        "For your security you are not logged in; log in again with your card.",
    ),
    "faq": (
        "常見問題請參考本站FAQ，若仍無法取得答案，"
        "請於星期一至星期五 08:30~17:30上班時間來電客服專線。",
        "See the FAQ; otherwise call the help desk Monday to Friday, 08:30–17:30.",
    ),
    "service_centre": ("單一窗口服務中心", "Single Window service centre"),
    "service_phone": ("電話", "Phone"),
    "service_fax": ("傳真", "Fax"),
    "service_mail": ("信箱", "E-mail"),
    "service_hours": ("服務時間：星期一至星期五 08:30~17:30", "Hours: Monday–Friday 08:30–17:30"),
    "back_home": ("回首頁", "Home"),
    "cancelled": ("註冊作業已取消。", "The registration was cancelled."),
    "expired": (
        "註冊作業已逾時，請重新申請。",
        "The registration expired; please start again.",
    ),
    "restart": ("重新註冊", "Start again"),
    # activation, login, account
    "activation": ("帳號啟用", "Account activation"),
    "activation_text": (
        "請按下 [啟用帳號] 完成帳號啟用。",
        "Press [Activate account] to activate your account.",
    ),
    "activate": ("啟用帳號", "Activate account"),
    "activated": ("帳號已啟用", "Account activated"),
    "activated_next": (
        "您現在可以使用憑證登入。",
        "You can now log in with your certificate.",
    ),
    "login_intro": (
        "請插入已註冊的憑證卡，輸入PIN碼後按下 [登入]。",
        "Insert your registered card, enter its PIN and press [Log in].",
    ),
    "login_button": ("登入", "Log in"),
    "my_account": ("我的帳號", "My account"),
    "set_certificate": ("設定憑證", "Certificate settings"),
    "applicant_type": ("申請屬性", "Applicant type"),
    "session_expires": ("登入有效至", "Session valid until"),
    "logout": ("登出", "Log out"),
    # privacy
    "privacy_1": (
        "本網站為辦理憑證註冊、帳號管理及通關相關服務，蒐集您的姓名、身分證字號（或統一編號、OID）、"
        "出生年月日、電子郵件、電話、地址及憑證資料。",
        "To register certificates, manage accounts and provide customs services, this site "
        "collects your name, ID number (or UBN or OID), date of birth, e-mail, phone, address "
        "and certificate data.",
    ),
    "privacy_2": (
        "身分證字號以金鑰雜湊保存並僅顯示遮罩值；密碼以 argon2id 演算法保存；"
        "憑證PIN碼只在您的電腦上使用，不會傳送至本網站。",
        "ID numbers are stored as keyed hashes and shown masked; passwords are stored with "
        "argon2id; your card's PIN is used only on your computer and never sent to this site.",
    ),
    "privacy_3": (
        "資料僅於前述目的範圍內使用，每一次註冊作業皆留有稽核紀錄。您得依個人資料保護法請求查詢、"
        "更正或刪除您的資料，請洽單一窗口服務中心。",
        "The data is used only for these purposes and every registration step is audited. You "
        "may ask to see, correct or delete your data under the Personal Data Protection Act; "
        "contact the service centre.",
    ),
    # accessibility statement (無障礙聲明)
    "accessibility": ("無障礙聲明", "Accessibility"),
    "a11y_standard_title": ("遵循標準", "The standard"),
    "a11y_standard": (
        "本網站以 WCAG 2.1 AA 等級（我國「網站無障礙規範」所依據之國際標準）為目標設計及測試。",
        "This site is designed and tested against WCAG 2.1 level AA, the international "
        "standard Taiwan's Web Accessibility Guidelines follow.",
    ),
    "a11y_testing_title": ("如何檢測", "How it is tested"),
    "a11y_testing": (
        "每次發布前，自動化測試以 Chromium 瀏覽器開啟各頁面，以 axe-core 檢查無障礙規則，並以鍵盤"
        "完成註冊、憑證登入與關員審核流程；頁面可縮放，不依賴顏色傳達資訊。",
        "Before every release, automated tests open the pages in Chromium, check them with "
        "axe-core and complete the registration, the card login and an officer's approval with "
        "the keyboard alone; pages can be zoomed and never rely on colour alone.",
    ),
    "a11y_limits_title": ("已知限制", "Known limits"),
    "a11y_limit_card": (
        "讀取憑證卡需要安裝讀卡機及卡片元件（本網站的讀卡代理程式或中華電信 HiPKI 元件）；"
        "無法使用讀卡機者，可改用行動自然人憑證或洽服務中心協助。",
        "Reading a card needs a card reader and a card component (this site's card agent or "
        "CHT's HiPKI component); if you cannot use a reader, use the mobile citizen "
        "certificate or ask the service centre for help.",
    ),
    "a11y_limit_progress": (
        "我們持續改善焦點外框的對比、手機版面，以及錯誤訊息的摘要與焦點移動。",
        "We are still improving the focus outline's contrast, the phone layout, and the error "
        "summary and focus after a refused form.",
    ),
    "a11y_contact_title": ("聯絡我們", "Contact"),
    "a11y_contact": (
        "若您在使用本網站時遇到障礙，請洽單一窗口服務中心，我們將協助您完成作業並改善網站。",
        "If anything on this site gets in your way, contact the Single Window service "
        "centre: we will help you finish and fix the site.",
    ),
    # demo outbox, errors
    "outbox": ("示範郵件匣", "Demo outbox"),
    "outbox_empty": ("目前沒有郵件。", "No mail yet."),
    "outbox_to": ("收件者", "To"),
    "outbox_subject": ("主旨", "Subject"),
    "error_title": ("無法完成此操作", "This could not be done"),
}
# fmt: on

CARD_CODES: Final = (
    ErrorCode.PIN_INCORRECT,
    ErrorCode.CARD_LOCKED,
    ErrorCode.NO_CARD,
    ErrorCode.NO_READER,
    ErrorCode.CARD_ERROR,
    ErrorCode.FIELD_REQUIRED,
)
"""Codes the page's script may raise itself (from the agent or HiCOS); their messages are
handed to it with the page."""

SCRIPT_TEXTS: Final = (
    "status_connecting", "status_signing", "status_checking", "status_done",
    "status_readers_found", "status_hipki", "hipki_untrusted", "hipki_cancelled", "hipki_failed",
    "popup_blocked", "network_error", "account_available", "reader_default",
    "local_network_title", "local_network_ask", "local_network_denied_help",
    "local_network_denied", "local_network_insecure",
)  # fmt: skip

MOBILE_SCRIPT_TEXTS: Final = (
    "mobile_starting", "mobile_waiting", "mobile_waiting_push", "mobile_approved",
    "mobile_time_left",
)  # fmt: skip
"""What mobile.js says by itself (the mobile citizen certificate's waiting state)."""
MOBILE_CODES: Final = (
    ErrorCode.INVALID_NATIONAL_ID,
    ErrorCode.MOBILE_ID_TIMEOUT,
    ErrorCode.MOBILE_ID_REJECTED,
    ErrorCode.MOBILE_ID_UNAVAILABLE,
)
"""Codes mobile.js may have to word itself (the portal's answers carry their own message)."""

HIPKI_CODE_TEXTS: Final[dict[int, tuple[str, str]]] = {
    0x76000003: ("未輸入待簽訊息", "no data to sign"),
    0x7600000B: ("JSON格式錯誤", "JSON format error"),
    0x7600000C: ("參數錯誤", "parameter error"),
    0x7600000D: ("執行檔錯誤或逾時", "program error or time-out"),
    0x7600000E: ("不支援的方法", "unsupported method"),
    0x76100006: ("IC卡登入失敗", "card login failed"),
    0x76300001: ("簽章初始錯誤", "signing could not start"),
    0x76300002: ("簽章型別錯誤", "wrong signature type"),
    0x76300003: ("簽章內容錯誤", "wrong content to sign"),
    0x76600002: ("Base64解碼錯誤", "Base64 decoding error"),
}
"""Names of the HiPKI component's own error codes (CHT errorcode.js, DOMAIN.md §4.1) that
card.js shows after 「讀卡元件發生錯誤」; the codes it maps to a swreg code are not here."""
HIPKI_SCRIPT_TEXTS: Final = (
    "status_hipki_readers", "status_hipki_trusted", "hipki_trust", "hipki_missing",
    "hipki_forbidden", "hipki_pin_length", "hipki_pin_format",
)  # fmt: skip
HIPKI_CARD_CODES: Final = (
    ErrorCode.CERTIFICATE_EXPIRED,
    ErrorCode.CERTIFICATE_NOT_YET_VALID,
    ErrorCode.CERTIFICATE_TYPE_MISMATCH,
    ErrorCode.IDENTITY_MISMATCH,
)
"""Codes card.js maps HiPKI replies to besides :data:`CARD_CODES` (0x76500001/2, 0x830001xx,
0x76210001)."""


@dataclass(frozen=True, slots=True)
class Translator:
    """``t("key")`` in templates; also labels and error messages in the request's language."""

    language: Language

    def __call__(self, key: str, **values: object) -> str:
        zh, en = TEXTS[key]
        text = zh if self.language == "zh-TW" else en
        return text.format(**values) if values else text

    @property
    def other(self) -> Language:
        """The language the switch leads to."""
        return "en" if self.language == "zh-TW" else "zh-TW"

    def label(self, labels: Labels) -> str:
        return labels.get(self.language)

    def error(self, code: ErrorCode | str) -> str:
        return message_for(code, self.language)

    def field(self, name: str) -> str:
        """The label of a form field (its key when the vocabulary does not know it)."""
        key = f"field_{name}"
        return self(key) if key in TEXTS else name

    def script_messages(self) -> dict[str, str]:
        """What wizard.js and card.js show by themselves, in this language."""
        messages = {key: self(key) for key in SCRIPT_TEXTS}
        messages.update({str(code): self.error(code) for code in CARD_CODES})
        messages.update({key: self(key) for key in HIPKI_SCRIPT_TEXTS})
        messages.update({str(code): self.error(code) for code in HIPKI_CARD_CODES})
        messages.update({key: self(key) for key in MOBILE_SCRIPT_TEXTS})
        messages.update({str(code): self.error(code) for code in MOBILE_CODES})
        index = 0 if self.language == "zh-TW" else 1
        messages.update({f"hipki_code_{c:08x}": t[index] for c, t in HIPKI_CODE_TEXTS.items()})
        return messages
