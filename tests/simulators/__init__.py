"""Protocol-faithful stand-ins for the platforms' servers (WeCom's and DingTalk's APIs, Tencent's Finance SDK),
used by the tests and the benchmarks: they check what the bot sends as the platform would, and record it."""
