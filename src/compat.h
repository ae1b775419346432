/*
 * The few Lua C API differences between 5.1 (LuaJIT, OpenResty) and 5.4
 * that the binding needs.  Only macros and static helpers: the module never
 * links liblua, so it must not call a function one of the ABIs lacks
 * (luaL_setfuncs, luaL_checkversion_, lua_setuservalue ...).
 */
#ifndef BEEOS_COMPAT_H
#define BEEOS_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502
#define bee_rawlen(L, i) lua_objlen((L), (i))
#else
#define bee_rawlen(L, i) lua_rawlen((L), (i))
#endif

/* luaL_setfuncs is 5.2+: set each function with nup shared upvalues. */
static inline void bee_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
    for (; l->name; l++) {
        int i;
        for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}

/* luaL_testudata is 5.2+. */
static inline void *bee_testudata(lua_State *L, int ud, const char *tname) {
    void *p = lua_touserdata(L, ud);
    if (p && lua_getmetatable(L, ud)) {
        luaL_getmetatable(L, tname);
        if (!lua_rawequal(L, -1, -2)) p = NULL;
        lua_pop(L, 2);
        return p;
    }
    return NULL;
}

/* Attach the value on top of the stack to the userdata at idx (keeps it
 * alive as long as the userdata) and pop it.  5.1 has only environments,
 * which must be tables, so the value is wrapped. */
static inline void bee_setuservalue(lua_State *L, int idx) {
#if LUA_VERSION_NUM < 502
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    lua_createtable(L, 1, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
    lua_setfenv(L, idx);
#elif LUA_VERSION_NUM < 504
    lua_setuservalue(L, idx);
#else
    lua_setiuservalue(L, idx, 1);
#endif
}

#endif
