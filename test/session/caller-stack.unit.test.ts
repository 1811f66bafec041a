import { afterEach, describe, expect, it } from 'vitest'
import { withCallerStack } from '../../src/session/statement-outcome.js'

const originalPrepare = Error.prepareStackTrace
afterEach(() => {
  Error.prepareStackTrace = originalPrepare
})

/** Records which errors had their stacks formatted, and formats them as V8 would (message, then frames). */
function recordFormatting(): Error[] {
  const formatted: Error[] = []
  Error.prepareStackTrace = (error, frames) => {
    formatted.push(error)
    return [`${error.name}: ${error.message}`, ...frames.map((frame) => `    at ${frame.getFunctionName() ?? '<anonymous>'}`)].join('\n')
  }
  return formatted
}

function fromTheParser(): Error {
  return new Error('canceling statement due to user request')
}

function fromTheCaller(): Error {
  return new Error()
}

describe('withCallerStack: the caller\'s frames on a pg error', () => {
  it('appends the caller\'s frames to the error\'s own', () => {
    recordFormatting()
    const error = withCallerStack(fromTheParser(), fromTheCaller()) as Error
    const lines = (error.stack as string).split('\n')
    expect(lines[0]).toBe('Error: canceling statement due to user request')
    expect(lines).toContain('    at fromTheParser')
    expect(lines).toContain('    at fromTheCaller')
    expect(lines.indexOf('    at fromTheParser')).toBeLessThan(lines.indexOf('    at fromTheCaller'))
    // Read twice, formatted once.
    expect(error.stack).toBe(lines.join('\n'))
  })

  it('formats no stack until somebody reads it (the error\'s own on Node 20, where it is a data property)', () => {
    const formatted = recordFormatting()
    const error = fromTheParser()
    const caller = fromTheCaller()
    withCallerStack(error, caller)
    expect(formatted).not.toContain(caller)
    const ownIsAccessor = typeof Object.getOwnPropertyDescriptor(new Error(), 'stack')?.get === 'function'
    if (ownIsAccessor) expect(formatted).toEqual([])
    void error.stack
    expect(formatted).toContain(caller)
  })

  it('keeps a stack the caller sets, and leaves what is not an Error alone', () => {
    recordFormatting()
    const error = withCallerStack(fromTheParser(), fromTheCaller()) as Error
    error.stack = 'replaced'
    expect(error.stack).toBe('replaced')
    const notAnError = { message: 'x' }
    expect(withCallerStack(notAnError, fromTheCaller())).toBe(notAnError)
  })
})
