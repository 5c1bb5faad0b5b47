/* The sidebar page: show the customer of the contact the platform's script names (window.crmSidebar.show),
   open the follow-up and ticket forms on a tap, and post them without leaving the page. */
(function () {
  "use strict";
  var main = document.getElementById("main");

  function put(html) {
    main.innerHTML = html;
  }

  function fail(text) {
    put('<section class="message" id="message"><h1>暂时无法显示</h1><p></p></section>');
    main.querySelector("p").textContent = text;
  }

  function show(contact) {
    fetch("/sidebar/customer?contact=" + encodeURIComponent(contact), { credentials: "same-origin" })
      .then(function (answer) { return answer.text(); })
      .then(put, function () { fail("网络不太好，请稍后重试。"); });
  }

  function config() {
    var here = location.href.split("#")[0];
    return fetch("/sidebar/config?url=" + encodeURIComponent(here), { credentials: "same-origin" })
      .then(function (answer) {
        if (!answer.ok) { throw new Error("config " + answer.status); }
        return answer.json();
      });
  }

  window.crmSidebar = { config: config, show: show, fail: fail };

  main.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-open]");
    var closer = event.target.closest("[data-close]");
    if (opener) {
      var done = document.getElementById("notice");
      if (done) { done.remove(); }
      main.querySelectorAll("form.sheet").forEach(function (form) { form.hidden = true; });
      var form = document.getElementById(opener.getAttribute("data-open") + "-form");
      form.hidden = false;
      form.querySelector("textarea").focus();
    } else if (closer) {
      document.getElementById(closer.getAttribute("data-close") + "-form").hidden = true;
    }
  });

  main.addEventListener("submit", function (event) {
    var form = event.target;
    event.preventDefault();
    var button = form.querySelector("[type=submit]");
    var error = form.querySelector(".error");
    if (button.disabled) { return; }
    button.disabled = true;
    var body = new URLSearchParams(new FormData(form));
    fetch(form.getAttribute("action"), { method: "POST", credentials: "same-origin", body: body })
      .then(function (answer) {
        return answer.text().then(function (html) {
          if (answer.ok) {
            put(html);
            return;
          }
          var said = document.createElement("div");
          said.innerHTML = html;
          var reason = said.querySelector("p");
          error.textContent = reason ? reason.textContent : "没有保存，请重试。";
          error.hidden = false;
          button.disabled = false;
        });
      }, function () {
        error.textContent = "网络不太好，没有保存，请重试。";
        error.hidden = false;
        button.disabled = false;
      });
  });
})();
