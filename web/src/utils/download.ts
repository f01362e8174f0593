//! Saves text the page built (a digest, a report) as a file, without any server round trip.

export function saveTextFile(filename: string, text: string, type: string): void {
  const url = URL.createObjectURL(new Blob([text], { type }))
  const a = document.createElement('a')
  a.href = url
  a.download = filename
  a.rel = 'noopener'
  document.body.appendChild(a)
  a.click()
  a.remove()
  // Let the click's navigation start before the URL goes away.
  setTimeout(() => URL.revokeObjectURL(url), 1000)
}
