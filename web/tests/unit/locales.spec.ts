// zh.json and en.json have exactly the same keys, no empty values, and every key the code
// names literally exists. Also guards the money rule: no float parsing anywhere in src.
import { describe, expect, it } from 'vitest'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import en from '@/locales/en.json'
import zh from '@/locales/zh.json'

type Tree = { [k: string]: string | Tree }

function leaves(tree: Tree, prefix = ''): Map<string, string> {
  const out = new Map<string, string>()
  for (const [k, v] of Object.entries(tree)) {
    const key = prefix ? `${prefix}.${k}` : k
    if (typeof v === 'string') out.set(key, v)
    else for (const [kk, vv] of leaves(v, key)) out.set(kk, vv)
  }
  return out
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name: string) => {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) return sourceFiles(p)
    return /\.(ts|vue)$/.test(name) && !name.endsWith('.d.ts') ? [p] : []
  })
}

// Vitest runs from web/ (where its config is).
const SRC = join(process.cwd(), 'src')
const enKeys = leaves(en as Tree)
const zhKeys = leaves(zh as Tree)

describe('locales', () => {
  it('zh and en have exactly the same keys', () => {
    expect([...zhKeys.keys()].sort()).toEqual([...enKeys.keys()].sort())
  })

  it('no message is empty', () => {
    for (const [key, value] of [...enKeys, ...zhKeys]) {
      expect(value.trim(), key).not.toBe('')
    }
  })

  it('every literal key used in the source exists', () => {
    const used = new Set<string>()
    for (const file of sourceFiles(SRC)) {
      const text = readFileSync(file, 'utf8')
      for (const m of text.matchAll(/\bt\(\s*'([a-zA-Z0-9_.]+)'/g)) used.add(m[1]!)
    }
    expect(used.size).toBeGreaterThan(50)
    const missing = [...used].filter((k) => !enKeys.has(k))
    expect(missing).toEqual([])
  })
})

describe('money stays a string', () => {
  it('the source never parses floats or calls Number()', () => {
    const offenders: string[] = []
    for (const file of sourceFiles(SRC)) {
      const text = readFileSync(file, 'utf8')
      if (/parseFloat|\bNumber\(/.test(text)) offenders.push(file)
    }
    expect(offenders).toEqual([])
  })
})
