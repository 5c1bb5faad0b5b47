/* WeCom's part of the sidebar page: configure the JS-SDK (wx.config with the corp's signature, then
   wx.agentConfig with the app's), ask which external contact the chat is with, and hand it to the page
   (window.crmSidebar, set up by the page's own script). */
(function () {
  "use strict";
  var page = window.crmSidebar;
  if (!page) { return; }
  var wx = window.wx || window.jWeixin;
  if (!wx || typeof wx.config !== "function") {
    page.fail("请在企业微信的聊天工具栏中打开此页面。");
    return;
  }
  page.config().then(function (signed) {
    var failed = function () { page.fail("无法获取当前聊天的客户，请确认应用已开通「客户联系」权限后重试。"); };
    wx.config(signed.config);
    wx.error(failed);
    wx.ready(function () {
      var agent = Object.assign({}, signed.agentConfig, {
        success: function () {
          wx.invoke("getCurExternalContact", {}, function (res) {
            if (res && res.err_msg === "getCurExternalContact:ok" && res.userId) {
              page.show(res.userId);
            } else {
              page.fail("请在与客户的单聊中打开此页面。");
            }
          });
        },
        fail: failed
      });
      wx.agentConfig(agent);
    });
  }, function () {
    page.fail("页面已过期，请关闭后重新打开。");
  });
})();
