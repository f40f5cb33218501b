/*
 * libifunc: GNU indirect functions (STT_GNU_IFUNC).
 *
 * Exercises:
 *  - an exported IFUNC, ifunc_answer (42), called through the PLT from
 *    call_ifunc_answer (R_X86_64_JUMP_SLOT against an STT_GNU_IFUNC symbol:
 *    the loader must call the resolver and store its result);
 *  - the address of that IFUNC stored in an exported data pointer,
 *    ifunc_answer_ptr (R_X86_64_64 against the STT_GNU_IFUNC symbol);
 *  - a hidden IFUNC, hidden_seven (7), called from call_hidden_ifunc: the
 *    linker resolves the symbol itself and emits R_X86_64_IRELATIVE (addend
 *    = resolver address).
 * Resolvers take no arguments, touch only this library's own static data,
 * and count their calls (resolver_calls). Under glibc every relocation that
 * needs an IFUNC's value runs its resolver once (as does dlsym of
 * ifunc_answer): after an eager (RTLD_NOW) load resolver_calls() is 3
 * (IRELATIVE, R_X86_64_64, JUMP_SLOT); after a lazy load it is 2, becoming 3
 * at the first call_ifunc_answer().
 */

static int resolver_count;
static volatile int prefer_second; /* always 0: keeps both candidates alive */

static int answer_first(void) { return 42; }
static int answer_second(void) { return 42; }

static int seven_impl(void) { return 7; }

/* Resolvers are referenced by the ifunc attributes below. */
static int (*resolve_answer(void))(void)
{
    resolver_count++;
    return prefer_second ? answer_second : answer_first;
}

static int (*resolve_seven(void))(void)
{
    resolver_count++;
    return seven_impl;
}

int ifunc_answer(void) __attribute__((ifunc("resolve_answer")));

__attribute__((visibility("hidden"))) int hidden_seven(void)
    __attribute__((ifunc("resolve_seven")));

/* Exported, preemptible: its initialiser is R_X86_64_64 ifunc_answer. */
int (*ifunc_answer_ptr)(void) = ifunc_answer;

/* 42, through the PLT. */
__attribute__((noinline)) int call_ifunc_answer(void)
{
    return ifunc_answer();
}

/* 42, through the ifunc_answer_ptr data pointer. */
__attribute__((noinline)) int call_ifunc_via_ptr(void)
{
    return ifunc_answer_ptr();
}

/* 7, through the IRELATIVE-relocated slot. */
__attribute__((noinline)) int call_hidden_ifunc(void)
{
    return hidden_seven();
}

/* Number of resolver runs so far in this instance of the library. */
__attribute__((noinline)) int resolver_calls(void)
{
    return resolver_count;
}
