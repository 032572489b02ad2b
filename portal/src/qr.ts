// QR codes. The content format (docs/portal.md): a URL `https://<portal>/claim?code=<label code>`,
// so a phone's own camera app opens the portal with the code filled in; a plain label code is
// accepted too.

/** The label code a QR code's text carries, or undefined. */
export function codeFromQr(content: string): string | undefined {
  const text = content.trim();
  if (/^https?:\/\//i.test(text)) {
    try {
      const url = new URL(text);
      const code = url.pathname.replace(/\/+$/, "").endsWith("/claim") ? url.searchParams.get("code") : null;
      return code && /^[\x21-\x7e]{1,128}$/.test(code) ? code : undefined;
    } catch {
      return undefined;
    }
  }
  return /^[\x21-\x7e]{1,128}$/.test(text) ? text : undefined;
}

interface DetectedBarcode {
  rawValue: string;
}
interface BarcodeDetectorLike {
  detect(source: HTMLVideoElement): Promise<DetectedBarcode[]>;
}
type BarcodeDetectorClass = new (options: { formats: string[] }) => BarcodeDetectorLike;

function detectorClass(): BarcodeDetectorClass | undefined {
  return (globalThis as { BarcodeDetector?: BarcodeDetectorClass }).BarcodeDetector;
}

/** Whether this browser can scan (the camera and the built-in BarcodeDetector). */
export function canScan(): boolean {
  return !!detectorClass() && !!navigator.mediaDevices?.getUserMedia;
}

/**
 * Scans with the rear camera into `video` until a QR code with a label code is seen or `signal`
 * aborts; resolves with the code (undefined when stopped). Rejects when the camera cannot be used.
 */
export async function scan(video: HTMLVideoElement, signal: AbortSignal): Promise<string | undefined> {
  const Detector = detectorClass();
  if (!Detector) throw new Error("no BarcodeDetector");
  const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  try {
    video.srcObject = stream;
    await video.play();
    const detector = new Detector({ formats: ["qr_code"] });
    while (!signal.aborted) {
      const found = await detector.detect(video).catch(() => []);
      for (const barcode of found) {
        const code = codeFromQr(barcode.rawValue);
        if (code) return code;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    return undefined;
  } finally {
    for (const track of stream.getTracks()) track.stop();
    video.srcObject = null;
  }
}
