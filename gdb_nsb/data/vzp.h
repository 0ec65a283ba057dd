/*
 * vzp.h - macros for writing gdb-nsb live patches (manual mode).
 *
 * Build a patch with:   cc $(./nsb cflags) -shared fix.c -o fix.so
 * then bind it to its target with:   ./nsb generate TARGET fix.so
 *
 * A function defined in the patch replaces the target function of the same
 * name; a function that exists only in the patch is new code.  Global target
 * symbols are reached with ordinary `extern` declarations.  Symbols of limited
 * scope are reached through the macros below (same names and arguments as the
 * original tool).  Each macro declares the symbol `extern` under a unique
 * assembler name, so that -fPIC routes every use through a GOT/PLT slot, and
 * leaves a record in the section ".vzp.records" that the generator reads.
 *
 * Record layout (version 1), one NUL-terminated string per field:
 *   "VZP1" kind patch_symbol target_name file source_file source_line
 * kind is one of: file, alias, static_var, static_func, hidden_var,
 * hidden_func, protected_var, protected_func, internal_var, internal_func,
 * and for patch series: needs_patch (target_name: the build-id),
 * needs_state and provides_state (target_name: the id, file: the version),
 * cumulative (no fields); and the callbacks pre_patch, post_patch,
 * pre_unpatch, post_unpatch (patch_symbol and target_name: the callback
 * function's name).
 * A record used inside a function is a local static of that function, which
 * is how the generator knows a function-local static is meant.
 *
 * Every macro is a complete declaration (it ends in ';'), as the original's
 * are: patches written for the original tool put no ';' after a macro, ours
 * may.  Both compile with -Wall -Werror.  With -pedantic, ISO C has no empty
 * declaration outside a function: there, write no ';' after a macro at file
 * scope (inside a function the extra ';' is an empty statement).  The
 * original's include path works too: #include <include/vzp.h>.
 *
 * One C name means one symbol per patch file: C gives block-scope `extern`
 * declarations of the same name the file's linkage, so two references named
 * `calls` in one file (two functions' local statics, or a local one shadowing
 * a file-scope one) cannot stay apart; gcc keeps the first assembler name.
 * The generator refuses that; give the second one another name in the patch
 * and map it with VZP_STATIC_SYM_ALIAS(other_name, calls).
 */
#ifndef VZP_H
#define VZP_H

#define VZP__STR2(x) #x
#define VZP__STR(x) VZP__STR2(x)
#define VZP__CAT2(a, b) a##b
#define VZP__CAT(a, b) VZP__CAT2(a, b)
/* The assembler name of a reference: unique per compile unit (__COUNTER__
 * restarts in every unit, so the unit's main file is part of it).  It is
 * quoted for the assembler because file names contain '/', '.', '-'. */
#define VZP__LABEL(name, n) "__vzp_" #name "_" __BASE_FILE__ "_" VZP__STR(n)
#define VZP__ASMNAME(name, n) "\"" VZP__LABEL(name, n) "\""

#define VZP__RECORD(kind, psym, tname, file, n)                                 \
    __attribute__((section(".vzp.records"), used, aligned(1)))                  \
    static const char VZP__CAT(__vzp_rec_, n)[] =                               \
        "VZP1\0" kind "\0" psym "\0" tname "\0" file "\0" __FILE__ "\0"         \
        VZP__STR(__LINE__);

#define VZP__VAR_REF(kind, type, name, n, file)                                 \
    extern type name __asm__(VZP__ASMNAME(name, n));                              \
    VZP__RECORD(kind, VZP__LABEL(name, n), #name, file, n)

#define VZP__FUNC_REF(kind, rettype, name, args, n, file)                       \
    extern rettype name args __asm__(VZP__ASMNAME(name, n));                      \
    VZP__RECORD(kind, VZP__LABEL(name, n), #name, file, n)

/* Binding context: the target compile unit (path as the target was compiled)
 * for the static symbols and static function replacements that follow. */
#define VZP_FILE(file) VZP__RECORD("file", "", "", file, __COUNTER__)

/* A target static variable / function; inside a function body, that
 * function's local static.  The optional last argument names the file. */
#define VZP_STATIC_VAR_REF(type, name, ...)                                     \
    VZP__VAR_REF("static_var", type, name, __COUNTER__, "" __VA_ARGS__)
#define VZP_STATIC_FUNC_REF(rettype, name, args, ...)                           \
    VZP__FUNC_REF("static_func", rettype, name, args, __COUNTER__, "" __VA_ARGS__)

/* Target symbols with hidden / protected / internal ELF visibility. */
#define VZP_HIDDEN_VAR_REF(type, name)                                          \
    VZP__VAR_REF("hidden_var", type, name, __COUNTER__, "")
#define VZP_PROTECTED_VAR_REF(type, name)                                       \
    VZP__VAR_REF("protected_var", type, name, __COUNTER__, "")
#define VZP_INTERNAL_VAR_REF(type, name)                                        \
    VZP__VAR_REF("internal_var", type, name, __COUNTER__, "")
#define VZP_HIDDEN_FUNC_REF(rettype, name, args)                                \
    VZP__FUNC_REF("hidden_func", rettype, name, args, __COUNTER__, "")
#define VZP_PROTECTED_FUNC_REF(rettype, name, args)                             \
    VZP__FUNC_REF("protected_func", rettype, name, args, __COUNTER__, "")
#define VZP_INTERNAL_FUNC_REF(rettype, name, args)                              \
    VZP__FUNC_REF("internal_func", rettype, name, args, __COUNTER__, "")

/* The patch's `patch_name` (declared by a *_REF macro, or a function the patch
 * defines) means the target static `target_name` (two statics of one name in
 * different files).  The file comes from the REF macro or from VZP_FILE. */
#define VZP_STATIC_SYM_ALIAS(patch_name, target_name)                           \
    VZP__RECORD("alias", #patch_name, #target_name, "", __COUNTER__)

/* Patch series (see docs/patch-series.md).  A patch that must be applied on
 * top of another one names it by build-id (`nsb list` shows it); apply then
 * refuses while that patch (or a cumulative one that replaced it) is not
 * applied, and its revert refuses while this one is. */
#define VZP_NEEDS_PATCH(build_id)                                               \
    VZP__RECORD("needs_patch", "", build_id, "", __COUNTER__)

/* A system state (the kernel's klp_state): an id and a version, integer
 * constants.  A patch that changes how the program's data is to be read
 * provides a state; a later patch that relies on it needs it (at least that
 * version).  A cumulative patch must provide every state of the patches it
 * replaces, at the same or a higher version. */
#define VZP_NEEDS_STATE(id, version)                                            \
    VZP__RECORD("needs_state", "", VZP__STR(id), VZP__STR(version), __COUNTER__)
#define VZP_PROVIDES_STATE(id, version)                                         \
    VZP__RECORD("provides_state", "", VZP__STR(id), VZP__STR(version), __COUNTER__)

/* This patch is cumulative: applying it replaces, in one stop, every patch
 * applied to the same target object (functions only they changed get their
 * original code back).  `nsb patch --replace` does the same for any patch. */
#define VZP_CUMULATIVE VZP__RECORD("cumulative", "", "", "", __COUNTER__)

/* Callbacks (docs/CALLBACKS.md): functions of the patch that gdb-nsb calls in
 * the target as the patch goes in and out.  Write the macro after the
 * function's definition; at most one of each kind per patch; give callbacks
 * names the target does not have (a patch function named like a target
 * function replaces it).
 *   VZP_PRE_PATCH(fn)    int fn(void): before the patch goes live; non-zero
 *                        refuses the apply (nothing written, exit 19).
 *   VZP_POST_PATCH(fn)   void fn(void): once the patch is live.
 *   VZP_PRE_UNPATCH(fn)  int fn(void): before the revert; non-zero refuses it.
 *   VZP_POST_UNPATCH(fn) void fn(void): once the patch is out, and after an
 *                        apply that failed after its pre-patch callback ran.
 * Each runs on one thread of the process borrowed where it stopped, while
 * every other thread runs. */
#define VZP__CALLBACK(kind, type, fn, n)                                        \
    _Static_assert(__builtin_types_compatible_p(__typeof__(fn), type),          \
                   "vzp.h: the " kind " callback " #fn " must be " #type);      \
    VZP__RECORD(kind, #fn, #fn, "", n)
#define VZP_PRE_PATCH(fn) VZP__CALLBACK("pre_patch", int(void), fn, __COUNTER__)
#define VZP_POST_PATCH(fn) VZP__CALLBACK("post_patch", void(void), fn, __COUNTER__)
#define VZP_PRE_UNPATCH(fn) VZP__CALLBACK("pre_unpatch", int(void), fn, __COUNTER__)
#define VZP_POST_UNPATCH(fn) VZP__CALLBACK("post_unpatch", void(void), fn, __COUNTER__)

#include "vzp_shadow.h"

#endif /* VZP_H */
