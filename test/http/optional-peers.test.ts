import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'

const HTTP_DIR = join(import.meta.dirname, '../../src/http')
const FRAMEWORKS = /^(express|fastify|fastify-plugin|hono|@hono\/.*)$/

/** Every `import ... from '<specifier>'` of a file, with whether it is type-only. */
function importsOf(source: string): { readonly specifier: string; readonly typeOnly: boolean }[] {
  const found: { specifier: string; typeOnly: boolean }[] = []
  for (const match of source.matchAll(/^\s*(import|export)\s+(type\s+)?[^'"]*?from\s+['"]([^'"]+)['"]/gm)) {
    found.push({ specifier: match[3] as string, typeOnly: match[2] !== undefined })
  }
  for (const match of source.matchAll(/\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g)) {
    found.push({ specifier: match[1] as string, typeOnly: false })
  }
  return found
}

describe('framework packages are optional peers', () => {
  const files = readdirSync(HTTP_DIR).filter((file) => file.endsWith('.ts'))

  it.each(files)('%s imports frameworks for their types only', (file) => {
    const imports = importsOf(readFileSync(join(HTTP_DIR, file), 'utf8'))
    expect(imports.length).toBeGreaterThan(0)
    const runtime = imports.filter((entry) => FRAMEWORKS.test(entry.specifier) && !entry.typeOnly)
    expect(runtime).toEqual([])
  })

  it('the framework-neutral modules do not mention a framework at all', () => {
    for (const file of ['request-timeout.ts', 'governed-request.ts', 'node-http.ts', 'metrics-endpoint.ts']) {
      const imports = importsOf(readFileSync(join(HTTP_DIR, file), 'utf8'))
      expect(imports.filter((entry) => FRAMEWORKS.test(entry.specifier)), file).toEqual([])
    }
  })
})
