/* The board the firmware runs on: Arm's MPS2 AN386 (Cortex-M4F) as QEMU emulates it (-M mps2-an386).
 * UART0 is Arm's CMSDK APB UART; SysTick counts the 25 MHz system clock. */
#ifndef METAEDGE_BOARD_H
#define METAEDGE_BOARD_H

#include <stdint.h>

#define SYSCLK_HZ 25000000u

#define REG(addr) (*(volatile uint32_t *)(addr))
#define UART0_DATA REG(0x40004000u)
#define UART0_STATE REG(0x40004004u)
#define UART0_CTRL REG(0x40004008u)
#define UART0_BAUDDIV REG(0x40004010u)
#define UART_TX_FULL 1u
#define UART_RX_FULL 2u

#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define SCB_CPACR REG(0xE000ED88u)
#define SCB_ICSR REG(0xE000ED04u)
#define ICSR_PENDSTSET (1u << 26)

void uart_init(void);
void uart_put(uint8_t byte);
/* The next byte, or -1 when none arrived within `timeout` SysTick ticks (0: wait for ever). */
int uart_get(uint32_t timeout);

void clock_init(void);
uint64_t clock_ticks(void);

/* Leave QEMU through semihosting (SYS_EXIT) with `code`. */
void board_exit(int code) __attribute__((noreturn));

/* Stack bytes ever used since reset: the painted stack's high-water mark. */
uint32_t stack_high_water(void);
uint32_t stack_size(void);

#endif
