-- luacheck configuration: `make test` runs it over the shipped Lua.
std = "lua54"
self = false          -- methods of an interface may ignore self
max_line_length = 120
files["spec"] = { std = "+busted" }
files["bench"] = { std = "+lua51" }
-- The mock's agents share one handler signature, used or not.
files["lua/beeos/mock.lua"] = { unused_args = false }
