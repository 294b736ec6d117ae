/* Reset handler, vector table, UART, SysTick clock and semihosting exit of the MPS2 AN386 board. */
#include "board.h"

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_limit, __stack_top;
int main(void);

#define STACK_PAINT 0xA5A5A5A5u

static volatile uint32_t systick_wraps;

void uart_init(void) {
    UART0_BAUDDIV = 16; /* the smallest divider the UART accepts; QEMU does not pace bytes by it */
    UART0_CTRL = 3;     /* transmitter and receiver on */
}

void uart_put(uint8_t byte) {
    while (UART0_STATE & UART_TX_FULL) {
    }
    UART0_DATA = byte;
}

int uart_get(uint32_t timeout) {
    uint64_t start = timeout ? clock_ticks() : 0;
    while (!(UART0_STATE & UART_RX_FULL)) {
        if (timeout && clock_ticks() - start > timeout) return -1;
        /* about a hundred instructions between polls: under -icount the virtual clock advances by instructions, and a
           loop of device reads alone would stretch a timeout of milliseconds to seconds of host time */
        for (volatile uint32_t spin = 0; spin < 16; spin++) {
        }
    }
    return (int)(UART0_DATA & 0xFFu);
}

void clock_init(void) {
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* processor clock, interrupt on wrap, enabled */
}

uint64_t clock_ticks(void) {
    uint32_t wraps, value, pending;
    do {
        wraps = systick_wraps;
        value = SYST_CVR;
        pending = SCB_ICSR & ICSR_PENDSTSET;
    } while (wraps != systick_wraps);
    /* a wrap whose interrupt is still pending: a value read after it (near the reload) belongs to the next period */
    if (pending && value > 0x800000u) wraps++;
    return ((uint64_t)wraps << 24) + (0xFFFFFFu - value);
}

void SysTick_Handler(void) { systick_wraps++; }

void board_exit(int code) {
    /* SYS_EXIT with ADP_Stopped_ApplicationExit: QEMU ends with status 0, any other reason with 1 */
    uint32_t reason = code == 0 ? 0x20026u : 0x20024u;
    register uint32_t r0 __asm__("r0") = 0x18u;
    register uint32_t r1 __asm__("r1") = reason;
    __asm__ volatile("bkpt 0xAB" : : "r"(r0), "r"(r1) : "memory");
    for (;;) {
    }
}

uint32_t stack_size(void) { return (uint32_t)((uint8_t *)&__stack_top - (uint8_t *)&__stack_limit); }

uint32_t stack_high_water(void) {
    const uint32_t *word = &__stack_limit;
    while (word < &__stack_top && *word == STACK_PAINT) word++;
    return (uint32_t)((const uint8_t *)&__stack_top - (const uint8_t *)word);
}

void Fault_Handler(void) { board_exit(2); }

void Reset_Handler(void) {
    SCB_CPACR |= 0xFu << 20; /* full access to the FPU (CP10, CP11) before any float instruction */
    __asm__ volatile("dsb\n isb");
    for (uint32_t *src = &__data_load, *dst = &__data_start; dst < &__data_end;) *dst++ = *src++;
    for (uint32_t *dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;
    /* paint the stack below this frame so that stack_high_water can find the deepest use */
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *word = &__stack_limit; word < sp - 16; word++) *word = STACK_PAINT;
    board_exit(main());
}

typedef void (*handler)(void);
__attribute__((section(".vectors"), used)) static const handler vectors[16] = {
    (handler)&__stack_top, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, 0, 0, 0, 0,
    Fault_Handler, Fault_Handler, 0, Fault_Handler, SysTick_Handler,
};
