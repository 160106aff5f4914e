/* swreg wizard: progressive enhancement of the server-rendered pages (no build step).
 *
 * - window.swreg: the CSRF token (the page's csrf-token meta), JSON calls to /api, page data.
 * - Step 1 (申請類別): show only the chosen 類別's 屬性 and redraw the step bar for its path.
 * - Forms: keep 帳號 in step with the fields it is named after; 檢核是否存在 through the API.
 * - A refused form: focus its error summary (#error-summary), whose links lead to the fields.
 * - Phones: html.js; the header's 選單 button opens and closes the side menu.
 * Every page works without this script except the card check, which needs card.js.
 */
(function () {
  "use strict";

  /* The CSRF token the server issued with this page (its cookie is HttpOnly). */
  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return (meta && meta.getAttribute("content")) || "";
  }

  function pageData() {
    var node = document.getElementById("swreg-data");
    if (!node) {
      return {};
    }
    try {
      return JSON.parse(node.textContent || "{}");
    } catch (e) {
      return {};
    }
  }

  /* POST or GET JSON; resolves with the body, rejects with {code, message, field, ...}. */
  function api(method, url, body) {
    /* The API answers in the page's language (pages do not follow the browser's). */
    var headers = {
      Accept: "application/json",
      "Accept-Language": document.documentElement.lang || "zh-TW"
    };
    var token = csrfToken();
    if (token) {
      headers["X-CSRF-Token"] = token;
    }
    var init = { method: method, headers: headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(
      function (response) {
        return response
          .json()
          .catch(function () {
            return {};
          })
          .then(function (data) {
            if (response.ok) {
              return data;
            }
            var first = (data && data.errors && data.errors[0]) || {};
            first.status = response.status;
            throw first;
          });
      },
      function () {
        var messages = (pageData().messages || {});
        throw { code: "network_error", message: messages.network_error || "Network error" };
      }
    );
  }

  function show(node, text) {
    if (!node) {
      return;
    }
    node.textContent = text || "";
    node.hidden = !text;
  }

  window.swreg = { api: api, data: pageData, show: show };

  /* -- step 1: 類別 filters 屬性 --------------------------------------------------------- */

  function setupCategory(form) {
    var data = pageData();
    var paths = data.paths || {};
    var categories = form.querySelectorAll('input[name="category"]');
    var groups = form.querySelectorAll(".type-group");

    function redrawSteps(code) {
      var bar = document.getElementById("steps");
      var labels = paths[code];
      if (!bar || !labels) {
        return;
      }
      while (bar.firstChild) {
        bar.removeChild(bar.firstChild);
      }
      labels.forEach(function (label, index) {
        var item = document.createElement("li");
        if (index === 0) {
          item.setAttribute("aria-current", "step");
          item.className = "current";
        }
        var number = document.createElement("span");
        number.className = "step-number";
        number.textContent = String(index + 1);
        var text = document.createElement("span");
        text.className = "step-label";
        text.textContent = label;
        item.appendChild(number);
        item.appendChild(document.createTextNode(" "));
        item.appendChild(text);
        bar.appendChild(item);
      });
    }

    function chosenCategory() {
      var checked = form.querySelector('input[name="category"]:checked');
      return checked ? checked.value : "";
    }

    function apply() {
      var category = chosenCategory();
      groups.forEach(function (group) {
        group.hidden = Boolean(category) && group.getAttribute("data-category") !== category;
      });
      var chosen = form.querySelector('input[name="type"]:checked');
      if (category && (!chosen || chosen.getAttribute("data-category") !== category)) {
        var first = form.querySelector('input[name="type"][data-category="' + category + '"]');
        if (first) {
          first.checked = true;
          chosen = first;
        }
      }
      if (chosen) {
        redrawSteps(chosen.value);
      }
    }

    categories.forEach(function (radio) {
      radio.addEventListener("change", apply);
    });
    form.querySelectorAll('input[name="type"]').forEach(function (radio) {
      radio.addEventListener("change", function () {
        redrawSteps(radio.value);
      });
    });
    apply();
  }

  /* -- forms: 帳號 and 檢核是否存在 ----------------------------------------------------------- */

  function setupStepForm(form) {
    var field = form.getAttribute("data-account-field");
    var suffix = form.getAttribute("data-account-suffix");
    var separator = form.getAttribute("data-account-separator") || "";
    var main = field ? document.getElementById("f-" + field) : null;
    var extra = suffix ? document.getElementById("f-" + suffix) : null;
    var account = document.getElementById("account");
    var button = document.getElementById("check-account");
    var result = document.getElementById("check-account-result");

    function accountName() {
      if (!main) {
        return account ? account.value : "";
      }
      var base = main.value.trim();
      if (!base) {
        return "";
      }
      if (field === "email") {
        base = base.toLowerCase();
      }
      var tail = extra ? extra.value.trim().toUpperCase() : "";
      return tail ? base + separator + tail : base;
    }

    function update() {
      if (account && main) {
        account.value = accountName();
      }
      if (result) {
        result.textContent = "";
        result.className = "";
      }
    }

    [main, extra].forEach(function (input) {
      if (input) {
        input.addEventListener("input", update);
      }
    });

    if (button && result) {
      /* Busy while asking: aria-disabled, not disabled, which would take the focus away. */
      var checking = false;
      button.addEventListener("click", function (event) {
        event.preventDefault();
        if (checking) {
          return;
        }
        var name = accountName();
        if (!name) {
          if (main) {
            main.focus();
          }
          return;
        }
        checking = true;
        button.setAttribute("aria-disabled", "true");
        window.swreg
          .api("GET", "/api/accounts/check?name=" + encodeURIComponent(name))
          .then(
            function (body) {
              result.className = "ok";
              result.textContent = body.message;
            },
            function (error) {
              result.className = "error";
              result.textContent = error.message || String(error.code || "");
            }
          )
          .then(function () {
            checking = false;
            button.removeAttribute("aria-disabled");
          });
      });
    }
  }

  /* Phones (style.css, ≤ 600 px): the menu opens from the header's 選單 button. */
  document.documentElement.classList.add("js");

  function setupMenu(toggle, menu) {
    toggle.addEventListener("click", function () {
      var open = toggle.getAttribute("aria-expanded") !== "true";
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      menu.classList.toggle("open", open);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("menu-toggle");
    var menu = document.getElementById("side-menu");
    if (toggle && menu) {
      setupMenu(toggle, menu);
    } else if (toggle) {
      toggle.hidden = true; /* a page without a menu (the officer's login) */
    }
    /* A refused form: the error summary takes the focus, so it is read first. */
    var summary = document.getElementById("error-summary");
    if (summary) {
      summary.focus();
    }
    var category = document.getElementById("category-form");
    if (category) {
      setupCategory(category);
    }
    var step = document.getElementById("step-form");
    if (step) {
      setupStepForm(step);
    }
  });
})();
