/*
 * libdata: data relocations.
 *
 * Exercises: a static table of {string, function} pairs (R_X86_64_RELATIVE,
 * in RELRO .data.rel.ro); an exported array of string pointers in writable
 * .data (RELATIVE); an exported pointer initialised with the address of an
 * exported, preemptible variable (symbolic R_X86_64_64 against data_value),
 * and one with a non-zero addend (R_X86_64_64 data_array + 8); reads of
 * exported variables through the GOT (R_X86_64_GLOB_DAT); strcmp from libc
 * (JUMP_SLOT).
 */
#include <stddef.h>
#include <string.h>

static int op_add(int a, int b) { return a + b; }
static int op_sub(int a, int b) { return a - b; }
static int op_mul(int a, int b) { return a * b; }
static int op_max(int a, int b) { return a > b ? a : b; }
static int op_min(int a, int b) { return a < b ? a : b; }

struct op {
    const char *name;
    int (*fn)(int, int);
};

static const struct op ops[] = {
    { "add", op_add },
    { "sub", op_sub },
    { "mul", op_mul },
    { "max", op_max },
    { "min", op_min },
};

#define NOPS ((int)(sizeof ops / sizeof ops[0]))

int data_value = 1234;
int *data_value_ptr = &data_value;

int data_array[4] = { 10, 20, 30, 40 };
int *data_array_elem2 = &data_array[2];

char *data_strings[] = { "alpha", "beta", "gamma", 0 };

static const char *const table[] = { "one", "two", "three", "four", NULL };

/* ops[name](a, b), or -9999 if there is no such op. */
__attribute__((noinline)) int apply(const char *name, int a, int b)
{
    for (int i = 0; i < NOPS; i++)
        if (strcmp(ops[i].name, name) == 0)
            return ops[i].fn(a, b);
    return -9999;
}

/* Name of the i-th op ("add", "sub", "mul", "max", "min"), NULL past the end. */
__attribute__((noinline)) const char *op_name(int i)
{
    if (i < 0 || i >= NOPS)
        return NULL;
    return ops[i].name;
}

__attribute__((noinline)) int read_via_ptr(void)
{
    return *data_value_ptr;
}

/* *data_array_elem2, i.e. data_array[2] (30) when relocated correctly. */
__attribute__((noinline)) int read_array_elem2(void)
{
    return *data_array_elem2;
}

/* {"one", "two", "three", "four", NULL} */
__attribute__((noinline)) const char *const *string_table(void)
{
    return table;
}
