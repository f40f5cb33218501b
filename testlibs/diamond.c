/*
 * libdiamond_{a,b,c,d}: dependency-ordered initialisation and finalisation
 * over a diamond, and calls between test libraries.
 *
 *        a          DT_NEEDED of a: b, c (in that order)
 *       / \         DT_NEEDED of b: d;  of c: d
 *      b   c        all have DT_RUNPATH $ORIGIN
 *       \ /
 *        d
 *
 * Built once per letter with -DNAME="x" -DLETTER=x and -DDEP1=/-DDEP2= naming
 * the dependencies. Each library's constructor logs "init:diamond_x:ctor" and
 * its destructor "fini:diamond_x:dtor" to $SOLOADER_INIT_LOG. Any order with
 * dependencies initialised first (d before b and c, both before a) and
 * finalised last is correct; glibc's dlopen of libdiamond_a.so gives
 *   init: d, c, b, a        fini: a, b, c, d
 *
 * diamond_x() returns 'x' plus the sum of its dependencies' diamond_*():
 *   d = 100, b = 98 + 100 = 198, c = 99 + 100 = 199, a = 97 + 198 + 199 = 494
 * diamond_x_self() returns just 'x' (no cross-library call).
 */
#include "initlog.h"

#if !defined(NAME) || !defined(LETTER)
#error "build with -DNAME=\"x\" -DLETTER=x"
#endif

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(letter) CAT(diamond_, letter)
#define SELF_FN(letter) CAT(FN(letter), _self)

#ifdef DEP1
int FN(DEP1)(void);
#endif
#ifdef DEP2
int FN(DEP2)(void);
#endif

__attribute__((constructor)) static void ctor(void)
{
    initlog("init", "diamond_" NAME, "ctor");
}

__attribute__((destructor)) static void dtor(void)
{
    initlog("fini", "diamond_" NAME, "dtor");
}

__attribute__((noinline)) int SELF_FN(LETTER)(void)
{
    return NAME[0];
}

__attribute__((noinline)) int FN(LETTER)(void)
{
    int r = NAME[0];
#ifdef DEP1
    r += FN(DEP1)();
#endif
#ifdef DEP2
    r += FN(DEP2)();
#endif
    return r;
}
